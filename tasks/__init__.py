"""Task definitions shipped with flantune; importing this package registers them."""

from tasks import demo, examples  # noqa: F401

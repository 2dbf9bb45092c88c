"""Task definitions shipped with flantune; importing this package registers them."""

from tasks import demo  # noqa: F401

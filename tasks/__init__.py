"""Task definitions shipped with flantune; importing this package registers them."""

from . import demo, examples  # noqa: F401

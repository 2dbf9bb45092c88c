"""Task definitions shipped with flantune; importing this package registers them."""

from . import chat, demo, examples, preference  # noqa: F401

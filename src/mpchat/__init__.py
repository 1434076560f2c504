"""mpchat: a self-hosted AI chat backend for WeChat mini programs."""

__version__ = "0.1.0"

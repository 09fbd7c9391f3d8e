"""The pure core: values, parsers, renderers and plans. No subprocess, socket or file I/O."""

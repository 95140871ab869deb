"""blooio_operator."""

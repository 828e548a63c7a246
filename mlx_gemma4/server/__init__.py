"""An OpenAI-compatible HTTP server (``gemma4 serve``): parsing, errors, the model thread, the app."""

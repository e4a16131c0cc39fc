"""Built-in plugins of anyorder, registered through entry points exactly as a third party registers its own."""

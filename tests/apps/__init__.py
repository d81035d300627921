"""Small applications that tests run in real worker processes."""

"""Hipoink ESL server: the product records labels show, and the HTTP client that sends them."""

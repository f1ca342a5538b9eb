"""The HTTP/websocket server: queue, history and routes."""

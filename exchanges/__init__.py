"""The routing fabric of a virtual host: exchange types, the router, VirtualHost and Broker."""

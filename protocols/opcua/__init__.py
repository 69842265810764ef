"""OPC-UA driver (asyncua): polling and subscriptions, security, reconnects owned by the edge."""

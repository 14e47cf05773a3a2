"""Controllers: one module per controller, each a `dockyard.client.controller.Controller`."""

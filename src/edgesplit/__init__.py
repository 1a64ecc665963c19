"""edgesplit: split a PyTorch model between an edge server and a cloud server, cost-aware."""

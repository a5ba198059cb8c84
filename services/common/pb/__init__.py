"""Generated gRPC stubs: run `make protos`, never edit."""

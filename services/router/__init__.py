"""Signalbox router: Router Schema 1.1 over gRPC and HTTP JSON."""

"""The keys service: API key issuance and verification over gRPC (`signalbox.keys.v1.Keys`)."""

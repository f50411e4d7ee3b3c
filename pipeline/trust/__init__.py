"""Supply-chain trust: signing keys, image signatures, provenance (SLSA v1 in DSSE), VEX, and the verify gate."""

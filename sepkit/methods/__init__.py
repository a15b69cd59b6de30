"""Model families: one module each, behind the protocol of :mod:`sepkit.methods.base`."""

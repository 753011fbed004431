"""Shared foundation: settings, message contracts, kernels, IO and the local stack."""

//! Hostile inputs: bundle.

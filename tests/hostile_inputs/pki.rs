//! Hostile inputs: pki.

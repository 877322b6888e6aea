//! Hostile inputs: cli.

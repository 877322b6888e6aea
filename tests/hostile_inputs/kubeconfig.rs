//! Hostile inputs: kubeconfig.

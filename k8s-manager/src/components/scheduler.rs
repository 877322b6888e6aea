//! kube-scheduler: kubeadm's flags, without leader election.

use super::{Component, Context, Probe, SCHEDULER_PORT, flags};
use crate::supervisor::ProcessSpec;

pub struct Scheduler;

impl Component for Scheduler {
    fn stop_grace(&self) -> std::time::Duration {
        super::STATELESS_STOP_GRACE
    }

    fn name(&self) -> &'static str {
        "kube-scheduler"
    }

    fn needs(&self) -> &'static [&'static dyn Component] {
        &[&super::ApiServer]
    }

    fn spec(&self, ctx: &Context) -> ProcessSpec {
        let kubeconfig = ctx.kubeconfig("scheduler");
        ctx.spec(
            "kube-scheduler",
            flags([
                ("kubeconfig", kubeconfig.clone()),
                ("authentication-kubeconfig", kubeconfig.clone()),
                ("authorization-kubeconfig", kubeconfig),
                ("bind-address", "127.0.0.1".into()),
                ("secure-port", SCHEDULER_PORT.to_string()),
                ("leader-elect", "false".into()),
                ("profiling", "false".into()),
            ]),
        )
    }

    fn probe(&self, _ctx: &Context) -> Probe {
        Probe::http(format!("https://127.0.0.1:{SCHEDULER_PORT}/healthz")).insecure()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::test_support::{context, has_flag};

    #[test]
    fn scheduler_uses_its_kubeconfig() {
        let spec = Scheduler.spec(&context(std::path::Path::new("/s")));
        assert!(has_flag(&spec, "--kubeconfig=/s/kubeconfig/scheduler.conf"));
        assert!(has_flag(&spec, "--leader-elect=false"));
    }
}

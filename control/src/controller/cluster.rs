//! Cluster instances, as loxilb has them: a rule belongs to the instance
//! named after the `:` in its name (`llb-inst0` without one), and each
//! instance has a role on this node (MASTER, BACKUP, FAULT, STOP or
//! NOT_DEFINED) that `POST /config/cistate` sets, with the floating address
//! (`vip`) its full-NAT rules use as their source.
//!
//! loxilb's semantics (`pkg/loxinet/cluster.go`, `CIStateUpdate`): an
//! unknown instance is created on first use; `llb-inst0` exists from the
//! start, NOT_DEFINED.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::ControlState;
use crate::error::RuleError;
use crate::model::{CiStateIn, CiStateOut};

/// The instance loxilb reports before any `POST /config/cistate`.
pub const DEFAULT_INSTANCE: &str = "llb-inst0";

/// Valid cluster-instance states.
pub const CI_STATES: &[&str] = &["MASTER", "BACKUP", "FAULT", "STOP", "NOT_DEFINED"];

/// Every cluster instance this node knows, by name.
#[derive(Debug, Clone)]
pub struct Instances(BTreeMap<String, CiStateOut>);

impl Default for Instances {
    /// Only [`DEFAULT_INSTANCE`], NOT_DEFINED, as loxilb starts.
    fn default() -> Instances {
        let mut m = BTreeMap::new();
        m.insert(
            DEFAULT_INSTANCE.to_string(),
            CiStateOut {
                instance: DEFAULT_INSTANCE.into(),
                state: "NOT_DEFINED".into(),
                sync: 0,
                vip: "0.0.0.0".into(),
            },
        );
        Instances(m)
    }
}

impl ControlState {
    /// `POST /config/cistate`.
    pub fn post_cistate(&mut self, ci: &CiStateIn) -> Result<(), RuleError> {
        let state = ci.state.to_uppercase();
        if !CI_STATES.contains(&state.as_str()) {
            return Err(RuleError::MalformedCiState(format!(
                "state {:?} is not one of {CI_STATES:?}",
                ci.state
            )));
        }
        let vip = match ci.vip.trim() {
            "" => "0.0.0.0".to_string(),
            v => v
                .parse::<IpAddr>()
                .map_err(|_| RuleError::MalformedCiState(format!("vip {v:?} is not an address")))?
                .to_string(),
        };
        let instance = match ci.instance.as_str() {
            "" => DEFAULT_INSTANCE.to_string(),
            i => i.to_string(),
        };
        self.instances.0.insert(
            instance.clone(),
            CiStateOut {
                instance,
                state,
                sync: 0,
                vip,
            },
        );
        Ok(())
    }

    /// `GET /config/cistate/all`.
    pub fn cistate_view(&self) -> Vec<CiStateOut> {
        self.instances.0.values().cloned().collect()
    }
}

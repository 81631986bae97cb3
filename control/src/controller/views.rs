//! What GET and the metrics show of the rules: each endpoint with its
//! health and its counters from the workers.

use std::collections::HashMap;
use std::net::IpAddr;

use xlb_dataplane::tables::{EndpointSpec, ServiceKey};

use super::probes::endpoint_up;
use super::ControlState;
use crate::dataplane::DataplaneView;
use crate::model::LbRule;
use crate::rules::ValidRule;

/// One endpoint of one rule, as GET and the metrics show it.
#[derive(Debug, Clone)]
pub struct EndpointRow<'a> {
    /// The rule.
    pub rule: &'a ValidRule,
    /// The endpoint.
    pub endpoint: &'a EndpointSpec,
    /// Not marked down by health probing.
    pub up: bool,
    /// Packets sent to it.
    pub packets: u64,
    /// Bytes sent to it.
    pub bytes: u64,
    /// Flows opened to it.
    pub new_flows: u64,
}

impl ControlState {
    /// Every endpoint of every rule, in rule order, with its state and counters.
    pub fn endpoint_rows(&self, view: &dyn DataplaneView) -> Vec<EndpointRow<'_>> {
        let tables = self.tables();
        let ids: HashMap<(ServiceKey, IpAddr, u16), u32> = tables
            .services
            .iter()
            .flat_map(|s| {
                s.endpoints
                    .iter()
                    .map(move |e| ((s.spec.key, IpAddr::from(e.addr), e.port), e.id))
            })
            .collect();
        self.rules
            .values()
            .flat_map(|r| r.service.endpoints.iter().map(move |e| (r, e)))
            .map(|(r, e)| {
                let id = ids.get(&(r.service.key, e.addr, e.port));
                let (packets, bytes) = id.map_or((0, 0), |id| view.endpoint_counters(*id));
                let new_flows = id.map_or(0, |id| view.endpoint_new_flows(*id));
                EndpointRow {
                    rule: r,
                    endpoint: e,
                    up: endpoint_up(&self.status, &self.holds, r, e),
                    packets,
                    bytes,
                    new_flows,
                }
            })
            .collect()
    }

    /// The rules as `GET /config/loadbalancer/all` shows them.
    pub fn rules_view(&self, view: &dyn DataplaneView) -> Vec<LbRule> {
        let mut rows = self.endpoint_rows(view).into_iter();
        self.rules
            .values()
            .map(|r| {
                let mut doc = r.doc.clone();
                for (d, row) in doc.endpoints.iter_mut().zip(rows.by_ref()) {
                    d.counter = format!("{}:{}", row.packets, row.bytes);
                    d.state = if row.up { "active" } else { "inactive" }.into();
                }
                doc
            })
            .collect()
    }

    /// The configured rules (validated form).
    pub fn rules(&self) -> impl Iterator<Item = &ValidRule> {
        self.rules.values()
    }
}

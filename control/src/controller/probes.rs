//! Health-probe entries (`config/endpoint`, EPconfig.txt, and the ones
//! monitored rules imply), their latest results, and the hosts an operator
//! holds down: what decides whether an endpoint is in selection. A result
//! that changes an endpoint's state rebuilds only the rules that use it.

use std::collections::{BTreeMap, HashMap};

use xlb_dataplane::tables::{EndpointSpec, ServiceKey};

use super::ControlState;
use crate::error::RuleError;
use crate::model::{seconds, EpProbeStatus};
use crate::rules::{HostHold, Probe, ValidRule};

/// Latest probe result of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeStatus {
    /// Up?
    pub ok: bool,
    /// Smallest, average and largest delay, preformatted (e.g. "1.2ms").
    pub delays: [String; 3],
}

/// Probe entry name -> the rules whose monitored endpoints imply it (with how
/// many endpoints each).
pub(super) type ProbeRefs = HashMap<String, BTreeMap<ServiceKey, u32>>;

/// An endpoint is up unless an operator holds its host down, or its rule is
/// monitored and the last result of its probe entry (by name; a posted entry
/// of that name replaces the probe but shares the result) was a failure.
pub(super) fn endpoint_up(
    status: &HashMap<String, ProbeStatus>,
    holds: &[HostHold],
    r: &ValidRule,
    e: &EndpointSpec,
) -> bool {
    !holds
        .iter()
        .any(|h| h.covers_endpoint(r.service.key.proto, e))
        && r.probe_for(e)
            .is_none_or(|p| status.get(&p.name).is_none_or(|s| s.ok))
}

fn derived(rules: &BTreeMap<ServiceKey, ValidRule>) -> BTreeMap<String, Probe> {
    rules
        .values()
        .flat_map(|r| r.service.endpoints.iter().filter_map(|e| r.probe_for(e)))
        .map(|p| (p.name.clone(), p))
        .collect()
}

/// Count `r`'s implied probe entries into `refs` (`delta` +1 or -1); returns
/// the names no rule implies any more.
pub(super) fn add_refs(refs: &mut ProbeRefs, r: &ValidRule, delta: i32) -> Vec<String> {
    let mut gone = Vec::new();
    let key = r.service.key;
    for p in r.service.endpoints.iter().filter_map(|e| r.probe_for(e)) {
        if delta > 0 {
            *refs.entry(p.name).or_default().entry(key).or_default() += 1;
            continue;
        }
        let Some(users) = refs.get_mut(&p.name) else {
            continue;
        };
        if let Some(n) = users.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                users.remove(&key);
            }
        }
        if users.is_empty() {
            refs.remove(&p.name);
            gone.push(p.name);
        }
    }
    gone
}

impl ControlState {
    /// `POST /config/endpoint` with a validated entry: add or update.
    pub fn post_probe(&mut self, probe: Probe) -> Result<(), RuleError> {
        // Probe entries only decide which results are kept; endpoint states
        // follow results, so the tables do not change here.
        self.probes.insert(probe.name.clone(), probe);
        Ok(())
    }

    /// `DELETE /config/endpoint/epipaddress/{ip}`: the entry with this key
    /// (its name, or `<ip>_<probe_type>_<probe_port>`). An entry a monitored
    /// rule implies cannot be deleted while the rule exists.
    pub fn delete_probe(&mut self, key: &str) -> Result<(), RuleError> {
        if self.probe_refs.contains_key(key) {
            return Err(RuleError::RuleReferred);
        }
        if self.probes.remove(key).is_none() {
            return Err(RuleError::HostNotFound);
        }
        // Not implied by any rule: no endpoint uses its result.
        self.status.remove(key);
        Ok(())
    }

    pub(super) fn derived_probes(&self) -> BTreeMap<String, Probe> {
        derived(&self.rules)
    }

    /// Every probe target: entries that monitored rules imply, overridden by
    /// posted entries of the same name, plus the other posted entries. The
    /// health prober runs these.
    pub fn probe_targets(&self) -> Vec<Probe> {
        let mut all = self.derived_probes();
        for (k, p) in &self.probes {
            all.insert(k.clone(), p.clone());
        }
        all.into_values().collect()
    }

    /// `GET /config/endpoint/all`.
    pub fn probes_view(&self) -> Vec<EpProbeStatus> {
        self.probe_targets()
            .into_iter()
            .map(|p| {
                let st = self.status.get(&p.name);
                let held = self.holds.iter().any(|h| h.covers_probe(&p));
                EpProbeStatus {
                    activeretries: p.active_retries.map(Into::into),
                    avgdelay: st.map(|s| s.delays[1].clone()).unwrap_or_default(),
                    currstate: if !held && st.is_none_or(|s| s.ok) {
                        "ok"
                    } else {
                        "nok"
                    }
                    .into(),
                    hostname: p.host.to_string(),
                    inactiveretries: i64::from(p.retries),
                    maxdelay: st.map(|s| s.delays[2].clone()).unwrap_or_default(),
                    mindelay: st.map(|s| s.delays[0].clone()).unwrap_or_default(),
                    name: p.name.clone(),
                    probeduration: i64::from(p.duration_s),
                    probeport: i64::from(p.port),
                    probereq: p.req.clone(),
                    proberesp: p.resp.clone(),
                    probetimeout: p.timeout.map(seconds),
                    probetype: p.probe_type.name().into(),
                }
            })
            .collect()
    }

    /// Record a probe result (the health prober's entry point). Endpoints that
    /// change state reach the dataplane in a new snapshot. Unknown names are ignored.
    pub fn set_probe_status(&mut self, name: &str, status: ProbeStatus) -> Result<(), RuleError> {
        self.set_probe_statuses(vec![(name.to_string(), status)])
    }

    /// Record many probe results with at most one new snapshot: when a switch
    /// or a rack fails, hundreds of endpoints go down within one probe
    /// period, and one table build per result would fall behind. Only the
    /// rules whose endpoints use these results are rebuilt.
    pub fn set_probe_statuses(
        &mut self,
        results: Vec<(String, ProbeStatus)>,
    ) -> Result<(), RuleError> {
        let mut users = std::collections::BTreeSet::new();
        let mut old = Vec::new();
        for (name, status) in results {
            match self.probe_refs.get(&name) {
                Some(u) => users.extend(u.keys().copied()),
                None if self.probes.contains_key(&name) => {}
                None => continue,
            }
            let prev = self.status.insert(name.clone(), status);
            old.push((name, prev));
        }
        // Unchanged rules are skipped by `change_rules`.
        let changes = users
            .iter()
            .filter_map(|k| self.rules.get(k).map(|r| (*k, Some(r.clone()))))
            .collect();
        let res = self.change_rules(changes);
        if res.is_err() {
            for (name, prev) in old.into_iter().rev() {
                match prev {
                    Some(o) => self.status.insert(name, o),
                    None => self.status.remove(&name),
                };
            }
        }
        res
    }

    /// `POST /config/endpointhoststate`: hold the endpoints `hold` names down
    /// (`down`), or release every hold within it. Holds are operator state:
    /// they override probe results until released, and apply to rules
    /// created later too.
    pub fn set_host_state(&mut self, hold: HostHold, down: bool) -> Result<(), RuleError> {
        let before = self.holds.clone();
        if down {
            if !self.holds.contains(&hold) {
                self.holds.push(hold);
                self.holds.sort_unstable();
            }
        } else {
            self.holds.retain(|h| !hold.contains(h));
        }
        if self.holds == before {
            return Ok(());
        }
        // Rebuild the rules with an endpoint on that host.
        let changes = self
            .rules
            .iter()
            .filter(|(_, r)| r.service.endpoints.iter().any(|e| e.addr == hold.host))
            .map(|(k, r)| (*k, Some(r.clone())))
            .collect();
        if let Err(e) = self.change_rules(changes) {
            self.holds = before;
            return Err(e);
        }
        tracing::info!(
            host = %hold.host,
            port = hold.port,
            proto = ?hold.proto,
            "endpoint host {} by the operator",
            if down { "held down" } else { "released" }
        );
        Ok(())
    }
}

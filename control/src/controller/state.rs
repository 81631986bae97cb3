//! The control state and the one path by which rules change: every rule
//! mutation builds the table snapshot it leads to and publishes it before
//! the change becomes the state. The state's other parts live beside it:
//! probe entries, results and host holds in [`super::probes`], cluster
//! instances in [`super::cluster`], daemon-wide table settings in
//! [`super::settings`], what GET and the metrics show in [`super::views`].
//!
//! Invariant: every mutation is checked completely — by building the table
//! snapshot it leads to — and that snapshot is published before the change
//! becomes the state. A rejected mutation leaves both the state and the
//! published tables untouched. Mutations are serialised by the controller,
//! which owns the one `ControlState` of a daemon.
//!
//! Cost: a rule change rebuilds only the rules it touches
//! ([`Tables::update`]); the other rules' built tables are shared with the
//! previous snapshot. Whole rebuilds ([`Tables::build`]) are for changes
//! that touch everything (the network, source-NAT addresses, delete-all,
//! config loading).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use xlb_dataplane::net::Ip16;
use xlb_dataplane::tables::{
    BuildError, EndpointSpec, EndpointState, HoldGate, HoldSpec, NatMode, ServiceChange,
    ServiceKey, ServiceSpec, Tables, TablesSpec, TablesUpdate, MAX_ENDPOINTS_PER_SERVICE,
};

use super::cluster::{instance_of, Instances};
use super::probes::{add_refs, endpoint_up, ProbeRefs, ProbeStatus};
use super::settings::MaglevSize;
use crate::dataplane::{NetEnv, Publisher};
use crate::error::RuleError;
use crate::rules::{same_backend, HostHold, Oper, Probe, ValidRule};

/// Most rules xlb holds (beyond this: `rule-hwm error`, 403).
pub const MAX_RULES: usize = 16384;

/// One rule request of a group ([`ControlState::apply_rule_ops`]).
#[derive(Debug, Clone)]
pub enum RuleOp {
    /// `POST /config/loadbalancer`.
    Post(Box<ValidRule>),
    /// `DELETE /config/loadbalancer/...` of one rule.
    Delete(ServiceKey),
}

/// The snapshot a group of rule requests is building.
struct Group {
    update: TablesUpdate,
    /// Whether any request of the group changed the tables.
    changed: bool,
}

/// Everything control configures.
pub struct ControlState {
    publisher: Arc<dyn Publisher>,
    pub(super) net: Arc<dyn NetEnv>,
    pub(super) rules: BTreeMap<ServiceKey, ValidRule>,
    pub(super) probes: BTreeMap<String, Probe>,
    pub(super) status: HashMap<String, ProbeStatus>,
    /// Index of the entries monitored rules imply (kept with `rules`).
    pub(super) probe_refs: ProbeRefs,
    /// Hosts an operator holds down (`POST /config/endpointhoststate`).
    pub(super) holds: Vec<HostHold>,
    pub(super) instances: Instances,
    /// The election's flag, shared with every snapshot's roles.
    pub(super) gate: HoldGate,
    /// Set while a controller has made any instance MASTER here (what
    /// connection sync asks besides the election: [`ControlState::masters`]).
    pub(super) masters: HoldGate,
    pub(super) snat_addrs: Vec<IpAddr>,
    pub(super) maglev_size: MaglevSize,
    /// IPIP for every IPv4 DSR rule, not only those that ask (`xlb run --dsr-ipip`).
    pub(super) dsr_ipip: bool,
    /// Inside [`ControlState::batch`]: commit without building.
    deferred: bool,
    /// Inside [`ControlState::apply_rule_ops`]: the next snapshot, published
    /// when the group ends.
    group: Option<Group>,
    /// The snapshot before the current one: held here so that the last
    /// reference to a replaced snapshot is dropped by control, never by a
    /// worker in its packet loop.
    retired: Option<Arc<Tables>>,
}

impl std::fmt::Debug for ControlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlState")
            .field("rules", &self.rules.len())
            .field("probes", &self.probes.len())
            .finish_non_exhaustive()
    }
}

/// A saved copy of what a batch may change (to undo it whole).
#[derive(Clone)]
struct Saved {
    rules: BTreeMap<ServiceKey, ValidRule>,
    probes: BTreeMap<String, Probe>,
    status: HashMap<String, ProbeStatus>,
    probe_refs: ProbeRefs,
    holds: Vec<HostHold>,
}

impl ControlState {
    /// An empty state publishing through `publisher`, building tables for `net`.
    pub fn new(publisher: Arc<dyn Publisher>, net: Arc<dyn NetEnv>) -> ControlState {
        ControlState {
            publisher,
            net,
            rules: BTreeMap::new(),
            probes: BTreeMap::new(),
            status: HashMap::new(),
            probe_refs: HashMap::new(),
            holds: Vec::new(),
            instances: Instances::default(),
            gate: HoldGate::new(),
            masters: HoldGate::new(),
            snat_addrs: Vec::new(),
            maglev_size: MaglevSize::default(),
            dsr_ipip: false,
            deferred: false,
            group: None,
            retired: None,
        }
    }

    /// The snapshot published last (the one the workers read).
    pub fn tables(&self) -> Arc<Tables> {
        self.publisher.current()
    }

    /// Run `f` as one change: if it fails, the rules, probe entries and
    /// holds go back to what they were before it, and are published again.
    pub fn all_or_nothing<T, E>(
        &mut self,
        f: impl FnOnce(&mut ControlState) -> Result<T, E>,
    ) -> Result<T, E> {
        let saved = self.save();
        let out = f(self);
        if out.is_err() {
            self.restore(saved);
            if let Err(e) = self.refresh() {
                tracing::error!("publishing the state from before a rejected change: {e}");
            }
        }
        out
    }

    fn save(&self) -> Saved {
        Saved {
            rules: self.rules.clone(),
            probes: self.probes.clone(),
            status: self.status.clone(),
            probe_refs: self.probe_refs.clone(),
            holds: self.holds.clone(),
        }
    }

    fn restore(&mut self, s: Saved) {
        self.rules = s.rules;
        self.probes = s.probes;
        self.status = s.status;
        self.probe_refs = s.probe_refs;
        self.holds = s.holds;
    }

    /// Publish `tables` with the roles `holds`.
    fn publish(&mut self, mut tables: Tables, holds: HoldSpec) {
        tables.set_holds(holds);
        let prev = self.publisher.current();
        self.publisher.publish(tables);
        // Frees the one before `prev` (if no one else holds it).
        self.retired = Some(prev);
    }

    /// Apply rule requests in order, each accepted or refused on its own
    /// exactly as alone (checked against the state the earlier ones left),
    /// and publish the accepted ones as one snapshot. Copying the snapshot is
    /// the fixed cost of a table change, so the API applies every rule request
    /// that queued up while the previous one was being built in one group.
    /// Returns each request's outcome; nothing is published if none changed
    /// the tables.
    pub fn apply_rule_ops(&mut self, ops: Vec<RuleOp>) -> Vec<Result<(), RuleError>> {
        if self.deferred {
            return ops.into_iter().map(|op| self.apply_rule_op(op)).collect();
        }
        self.group = Some(Group {
            update: self.publisher.current().begin_update(),
            changed: false,
        });
        let out = ops.into_iter().map(|op| self.apply_rule_op(op)).collect();
        self.end_group();
        out
    }

    pub(super) fn apply_rule_op(&mut self, op: RuleOp) -> Result<(), RuleError> {
        match op {
            RuleOp::Post(r) => self.post_rule(*r),
            RuleOp::Delete(k) => self.delete_rule(&k),
        }
    }

    /// Publish what the group changed (if anything) and leave group mode.
    fn end_group(&mut self) {
        if let Some(g) = self.group.take() {
            if g.changed {
                // The group's changes are the state now.
                let holds = self.hold_spec_over(self.rules.values());
                self.publish(g.update.finish(), holds);
            }
        }
    }

    /// Apply rule changes (`None` removes the rule): build the next snapshot
    /// from the current one, rebuilding only these rules, publish it, then
    /// make the changes the state. Give each key once. In a group, a single
    /// change goes into the group's snapshot; several end the group first
    /// (they must be taken or refused together) and start a new one after.
    pub(super) fn change_rules(
        &mut self,
        changes: Vec<(ServiceKey, Option<ValidRule>)>,
    ) -> Result<(), RuleError> {
        if self.group.is_some() && changes.len() > 1 {
            self.end_group();
            let res = self.change_rules(changes);
            self.group = Some(Group {
                update: self.publisher.current().begin_update(),
                changed: false,
            });
            return res;
        }
        if !self.deferred {
            let published = self.publisher.current();
            let current: &Tables = match &self.group {
                Some(g) => g.update.tables(),
                None => &published,
            };
            let mut specs = Vec::with_capacity(changes.len());
            let mut addrs = Vec::new();
            for (key, rule) in &changes {
                match rule {
                    None => {
                        if current.service_index(key).is_some() {
                            specs.push(ServiceChange::Remove(*key));
                        }
                    }
                    Some(r) => {
                        let spec = self.service_for(r);
                        let same = current
                            .service_index(key)
                            .is_some_and(|i| current.services[i].spec == spec);
                        if !same {
                            for e in &spec.endpoints {
                                if !current.next_hops.contains_key(&Ip16::from(e.addr)) {
                                    addrs.push(e.addr);
                                }
                            }
                            specs.push(ServiceChange::Upsert(spec));
                        }
                    }
                }
            }
            if !specs.is_empty() {
                addrs.sort();
                addrs.dedup();
                let hops = if addrs.is_empty() {
                    Vec::new()
                } else {
                    self.net.next_hops(&addrs)
                };
                match &mut self.group {
                    Some(g) => {
                        // One change (see above): taken whole or refused whole.
                        for c in &specs {
                            g.update.apply(c, &hops).map_err(build_error)?;
                            g.changed = true;
                        }
                    }
                    None => {
                        let tables = published.update(&specs, &hops).map_err(build_error)?;
                        let holds = self.hold_spec_with(&changes);
                        self.publish(tables, holds);
                    }
                }
            }
        }
        for (key, rule) in changes {
            let old = match rule {
                Some(r) => {
                    add_refs(&mut self.probe_refs, &r, 1);
                    self.rules.insert(key, r)
                }
                None => self.rules.remove(&key),
            };
            if let Some(old) = old {
                for name in add_refs(&mut self.probe_refs, &old, -1) {
                    if !self.probes.contains_key(&name) {
                        self.status.remove(&name);
                    }
                }
            }
        }
        Ok(())
    }

    /// Run many mutations with one table build at the end (loading a config
    /// file of many rules would otherwise rebuild every table per entry).
    /// Each mutation inside still gets every check except `Tables::build`'s;
    /// if the final build fails, everything `f` did is undone and that error
    /// returned, so the caller can replay one by one to find the culprit.
    pub fn batch<T>(&mut self, f: impl FnOnce(&mut ControlState) -> T) -> Result<T, RuleError> {
        let saved = self.save();
        self.deferred = true;
        let out = f(self);
        self.deferred = false;
        match self.refresh() {
            Ok(()) => Ok(out),
            Err(e) => {
                self.restore(saved);
                Err(e)
            }
        }
    }

    /// Rebuild all tables from the current state (e.g. after the network
    /// changed); publishes only if something differs.
    pub fn refresh(&mut self) -> Result<(), RuleError> {
        if self.deferred {
            return Ok(());
        }
        let spec = self.spec();
        let holds = self.hold_spec_over(self.rules.values());
        let current = self.publisher.current();
        if !current.matches(&spec) {
            let tables = Tables::build(spec, &current).map_err(build_error)?;
            self.publish(tables, holds);
        } else if *current.holds().spec() != holds {
            // Only the roles changed: the same tables, one flag different.
            self.publish(current.begin_update().finish(), holds);
        }
        Ok(())
    }

    /// The roles the tables must carry once `changes` are the state.
    fn hold_spec_with(&self, changes: &[(ServiceKey, Option<ValidRule>)]) -> HoldSpec {
        if !self.instances.active() {
            return self.hold_spec_over(std::iter::empty());
        }
        let mut rules: BTreeMap<&ServiceKey, &ValidRule> = self.rules.iter().collect();
        for (k, r) in changes {
            match r {
                Some(r) => rules.insert(k, r),
                None => rules.remove(k),
            };
        }
        self.hold_spec_over(rules.into_values())
    }

    /// The dataplane form of a rule: endpoint states from the probe results,
    /// IPIP from the daemon's default, and in full NAT its instance's
    /// floating address (cistate `vip`) as the source towards the endpoints.
    fn service_for(&self, r: &ValidRule) -> ServiceSpec {
        let mut service = r.service.clone();
        if self.dsr_ipip && service.mode == NatMode::Dsr && service.key.vip.is_ipv4() {
            service.dsr_ipip = true;
        }
        if service.mode == NatMode::FullNat {
            service.snat = self
                .instances
                .vip(instance_of(&r.doc.serviceargs.name))
                .filter(|a| a.is_ipv4() == service.key.vip.is_ipv4());
        }
        for e in &mut service.endpoints {
            e.state = if endpoint_up(&self.status, &self.holds, r, e) {
                EndpointState::Active
            } else {
                EndpointState::Down
            };
        }
        service
    }

    /// The whole wanted dataplane state.
    pub(super) fn spec(&self) -> TablesSpec {
        let mut addrs: Vec<IpAddr> = Vec::new();
        let services = self
            .rules
            .values()
            .map(|r| {
                addrs.extend(r.service.endpoints.iter().map(|e| e.addr));
                self.service_for(r)
            })
            .collect();
        addrs.sort();
        addrs.dedup();
        TablesSpec {
            services,
            next_hops: self.net.next_hops(&addrs),
            ports: self.net.ports(),
            snat_addrs: self.snat_addrs.clone(),
            nat_ports: (0, 0),
            maglev_size: self.maglev_size.get(),
        }
    }

    /// `POST /config/loadbalancer` with a validated rule.
    pub fn post_rule(&mut self, rule: ValidRule) -> Result<(), RuleError> {
        let key = rule.service.key;
        let next = match (rule.oper, self.rules.get(&key)) {
            (Oper::Add | Oper::Attach, None) => {
                if self.rules.len() >= MAX_RULES {
                    return Err(RuleError::RuleHwm(format!("at most {MAX_RULES} rules")));
                }
                Some(rule)
            }
            (Oper::Detach, None) => return Err(RuleError::RuleNotExists),
            (Oper::Add, Some(old)) => {
                if old.updatable() == rule.updatable() {
                    return Err(RuleError::Exists);
                }
                Some(update_in_place(old, &rule)?)
            }
            (Oper::Attach, Some(old)) => {
                let mut doc = old.doc.clone();
                let mut changed = false;
                let old_eps = &old.service.endpoints;
                for (new_doc, new) in rule.doc.endpoints.iter().zip(&rule.service.endpoints) {
                    match old_eps.iter().position(|o| same_backend(o, new)) {
                        Some(i) if old_eps[i].weight == new.weight => {}
                        Some(i) => {
                            doc.endpoints[i].weight = new_doc.weight;
                            changed = true;
                        }
                        None => {
                            doc.endpoints.push(new_doc.clone());
                            changed = true;
                        }
                    }
                }
                if !changed {
                    return Err(RuleError::Exists);
                }
                if doc.endpoints.len() > MAX_ENDPOINTS_PER_SERVICE {
                    return Err(RuleError::EndpointsRange);
                }
                Some(doc.validate()?)
            }
            (Oper::Detach, Some(old)) => {
                let detached =
                    |o: &EndpointSpec| rule.service.endpoints.iter().any(|d| same_backend(d, o));
                if !old.service.endpoints.iter().any(detached) {
                    // Nothing to detach: nothing changes, as loxilb's "exists".
                    return Err(RuleError::Exists);
                }
                let mut doc = old.doc.clone();
                doc.endpoints = doc
                    .endpoints
                    .into_iter()
                    .zip(&old.service.endpoints)
                    .filter(|(_, o)| !detached(o))
                    .map(|(d, _)| d)
                    .collect();
                if doc.endpoints.is_empty() {
                    None
                } else {
                    Some(doc.validate()?)
                }
            }
        };
        self.change_rules(vec![(key, next)])
    }

    /// Delete the rule with this identity (`no-rule error` if absent).
    pub fn delete_rule(&mut self, key: &ServiceKey) -> Result<(), RuleError> {
        if !self.rules.contains_key(key) {
            return Err(RuleError::NoRule);
        }
        self.change_rules(vec![(*key, None)])
    }

    /// Delete every rule named `name` (always succeeds).
    pub fn delete_rules_named(&mut self, name: &str) -> Result<(), RuleError> {
        let gone = self
            .rules
            .iter()
            .filter(|(_, r)| r.doc.serviceargs.name == name)
            .map(|(k, _)| (*k, None))
            .collect();
        self.change_rules(gone)
    }

    /// Delete every rule (always succeeds).
    pub fn delete_all_rules(&mut self) -> Result<(), RuleError> {
        let gone = self.rules.keys().map(|k| (*k, None)).collect();
        self.change_rules(gone)
    }
}

/// Apply a re-post's changeable parts (endpoints, probe settings, sel, mode
/// and xlb's DSR encapsulation, allowed sources, and with them the idle
/// timeout, as loxilb does) to the existing rule; the rest (name, flags) stays.
fn update_in_place(old: &ValidRule, new: &ValidRule) -> Result<ValidRule, RuleError> {
    let mut doc = old.doc.clone();
    let n = &new.doc.serviceargs;
    let s = &mut doc.serviceargs;
    s.sel = n.sel;
    s.mode = n.mode;
    // Tied to the mode: a re-post that leaves DSR must drop it with it.
    s.dsripip = n.dsripip;
    s.probetype = n.probetype.clone();
    s.probeport = n.probeport;
    s.probereq = n.probereq.clone();
    s.proberesp = n.proberesp.clone();
    s.probetimeout = n.probetimeout;
    s.proberetries = n.proberetries;
    s.probereplytimeout = n.probereplytimeout.clone();
    s.probeactiveretries = n.probeactiveretries.clone();
    s.monitor = n.monitor;
    s.inactivetimeout = n.inactivetimeout;
    doc.allowedsources = new.doc.allowedsources.clone();
    doc.endpoints = new.doc.endpoints.clone();
    doc.validate()
}

fn build_error(e: BuildError) -> RuleError {
    match e {
        BuildError::TooManyEndpoints => RuleError::RuleHwm(e.to_string()),
        BuildError::EndpointCount(..) => RuleError::EndpointsRange,
        BuildError::EndpointFamily(..) | BuildError::DuplicateEndpoint(..) => {
            RuleError::MalformedEndpoint(e.to_string())
        }
        BuildError::OverlappingService(..)
        | BuildError::DuplicateService(..)
        | BuildError::BadPortRange(..) => RuleError::MalformedService(e.to_string()),
        other => RuleError::ServiceArgs(other.to_string()),
    }
}

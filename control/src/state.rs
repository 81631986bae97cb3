//! The control state: load-balancer rules, health-probe entries and their
//! results, cluster-instance state — and the one path by which it changes.
//!
//! Invariant: every mutation is checked completely — by building the table
//! snapshot it leads to — and that snapshot is published before the change
//! becomes the state. A rejected mutation leaves both the state and the
//! published tables untouched. Callers serialise mutations (the API holds one
//! lock around `ControlState`).
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
use xlb_dataplane::select::maglev::{Maglev, DEFAULT_TABLE_SIZE};
use xlb_dataplane::tables::{
    BuildError, EndpointSpec, EndpointState, NatMode, ServiceChange, ServiceKey, ServiceSpec,
    Tables, TablesHandle, TablesSpec, TablesUpdate, MAX_ENDPOINTS_PER_SERVICE,
};

use crate::env::{DataplaneView, NetEnv};
use crate::error::RuleError;
use crate::model::{CiStateIn, CiStateOut, EpProbeStatus, LbRule};
use crate::rules::{same_backend, HostHold, Oper, Probe, ValidRule};

/// Most rules xlb holds (beyond this: `rule-hwm error`, 403).
pub const MAX_RULES: usize = 16384;
/// The instance loxilb reports before any `POST /config/cistate`.
pub const DEFAULT_INSTANCE: &str = "llb-inst0";
/// Valid cluster-instance states.
pub const CI_STATES: &[&str] = &["MASTER", "BACKUP", "FAULT", "STOP", "NOT_DEFINED"];

/// The Maglev lookup-table size of every hash (sel 1) and persist (sel 3)
/// rule (`xlb run --maglev-size`): a prime the dataplane builds tables of,
/// large enough for any rule. Checked once, when it is made, so a bad value
/// stops the daemon before it starts rather than refusing rules later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MaglevSize(usize);

impl MaglevSize {
    /// The smallest size: the smallest prime with a slot for each of a rule's
    /// [`MAX_ENDPOINTS_PER_SERVICE`] endpoints (Maglev gives every weighted
    /// backend at least one slot, so a smaller table would refuse big rules).
    pub const MIN: usize = 37;
    /// The largest size: the largest prime the dataplane builds
    /// ([`xlb_dataplane::select::maglev::MAX_TABLE_SIZE`]; 32 MiB per rule, far
    /// beyond any use).
    pub const MAX: usize = 16_777_213;

    /// Check `size`: a prime in [`MaglevSize::MIN`]..=[`MaglevSize::MAX`].
    pub fn new(size: usize) -> Result<MaglevSize, MaglevSizeError> {
        if !(Self::MIN..=Self::MAX).contains(&size) {
            return Err(MaglevSizeError::OutOfRange(size));
        }
        if !is_table_size(size) {
            return Err(MaglevSizeError::NotPrime {
                size,
                below: (Self::MIN..size).rev().find(|&m| is_table_size(m)),
                above: (size + 1..=Self::MAX).find(|&m| is_table_size(m)),
            });
        }
        Ok(MaglevSize(size))
    }

    /// The number of slots.
    pub fn get(self) -> usize {
        self.0
    }
}

/// Whether the dataplane builds Maglev tables of `m` slots. Asking it (an
/// empty table costs nothing) keeps one definition of what is accepted.
fn is_table_size(m: usize) -> bool {
    Maglev::build(&[], m).is_ok()
}

impl Default for MaglevSize {
    /// The dataplane's default (65537, the Maglev paper's and Katran's size).
    fn default() -> MaglevSize {
        MaglevSize(DEFAULT_TABLE_SIZE)
    }
}

impl std::fmt::Display for MaglevSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for MaglevSize {
    type Err = MaglevSizeError;
    fn from_str(s: &str) -> Result<MaglevSize, MaglevSizeError> {
        let size = s
            .trim()
            .parse()
            .map_err(|_| MaglevSizeError::NotANumber(s.to_string()))?;
        MaglevSize::new(size)
    }
}

/// Why a Maglev table size cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevSizeError {
    /// not a whole number
    #[error("{0:?} is not a whole number")]
    NotANumber(String),
    /// outside MaglevSize::MIN..=MaglevSize::MAX
    #[error(
        "{0} is out of range: give a prime from {min} to {max}",
        min = MaglevSize::MIN,
        max = MaglevSize::MAX
    )]
    OutOfRange(usize),
    /// Maglev's permutations need a prime table size
    #[error("{size} is not a prime, which Maglev needs{}", nearest(*.below, *.above))]
    NotPrime {
        /// The size given.
        size: usize,
        /// The nearest usable size below it, if any.
        below: Option<usize>,
        /// The nearest usable size above it, if any.
        above: Option<usize>,
    },
}

fn nearest(below: Option<usize>, above: Option<usize>) -> String {
    match (below, above) {
        (Some(b), Some(a)) => format!("; the nearest primes are {b} and {a}"),
        (Some(p), None) | (None, Some(p)) => format!("; the nearest prime is {p}"),
        (None, None) => String::new(),
    }
}

/// Latest probe result of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeStatus {
    /// Up?
    pub ok: bool,
    /// Smallest, average and largest delay, preformatted (e.g. "1.2ms").
    pub delays: [String; 3],
}

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
}

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

/// Probe entry name -> the rules whose monitored endpoints imply it (with how
/// many endpoints each).
type ProbeRefs = HashMap<String, BTreeMap<ServiceKey, u32>>;

/// Everything control configures.
pub struct ControlState {
    handle: TablesHandle,
    net: Arc<dyn NetEnv>,
    rules: BTreeMap<ServiceKey, ValidRule>,
    probes: BTreeMap<String, Probe>,
    status: HashMap<String, ProbeStatus>,
    /// Index of the entries monitored rules imply (kept with `rules`).
    probe_refs: ProbeRefs,
    /// Hosts an operator holds down (`POST /config/endpointhoststate`).
    holds: Vec<HostHold>,
    cistate: BTreeMap<String, CiStateOut>,
    snat_addrs: Vec<IpAddr>,
    maglev_size: MaglevSize,
    /// IPIP for every IPv4 DSR rule, not only those that ask (`xlb run --dsr-ipip`).
    dsr_ipip: bool,
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
    /// An empty state publishing through `handle`.
    pub fn new(handle: TablesHandle, net: Arc<dyn NetEnv>) -> ControlState {
        let mut cistate = BTreeMap::new();
        cistate.insert(
            DEFAULT_INSTANCE.to_string(),
            CiStateOut {
                instance: DEFAULT_INSTANCE.into(),
                state: "NOT_DEFINED".into(),
                sync: 0,
                vip: "0.0.0.0".into(),
            },
        );
        ControlState {
            handle,
            net,
            rules: BTreeMap::new(),
            probes: BTreeMap::new(),
            status: HashMap::new(),
            probe_refs: HashMap::new(),
            holds: Vec::new(),
            cistate,
            snat_addrs: Vec::new(),
            maglev_size: MaglevSize::default(),
            dsr_ipip: false,
            deferred: false,
            group: None,
            retired: None,
        }
    }

    /// The handle the dataplane reads.
    pub fn handle(&self) -> &TablesHandle {
        &self.handle
    }

    /// Set the full-NAT source addresses (`xlb run --snat-addrs`) and rebuild.
    /// Every full-NAT rule of an address's family uses them; with none of a
    /// family, the egress port's address is used.
    pub fn set_snat_addrs(&mut self, addrs: Vec<IpAddr>) -> Result<(), RuleError> {
        let old = std::mem::replace(&mut self.snat_addrs, addrs);
        let res = self.refresh();
        if res.is_err() {
            self.snat_addrs = old;
        }
        res
    }

    /// The full-NAT source addresses configured.
    pub fn snat_addrs(&self) -> &[IpAddr] {
        &self.snat_addrs
    }

    /// Set the Maglev table size of every rule (`xlb run --maglev-size`) and
    /// rebuild. Later changes keep it: an update starts from the snapshot.
    pub fn set_maglev_size(&mut self, size: MaglevSize) -> Result<(), RuleError> {
        self.set_and_refresh(|s| &mut s.maglev_size, size)
    }

    /// The Maglev table size configured.
    pub fn maglev_size(&self) -> MaglevSize {
        self.maglev_size
    }

    /// Encapsulate every IPv4 DSR rule in IPIP (`xlb run --dsr-ipip`), also
    /// the rules that do not ask for it with `dsrIpip` (kube-loxilb cannot
    /// send that field), and rebuild. IPv6 DSR rules keep the L2 rewrite.
    /// Rules show only their own `dsrIpip` in GET; this is the daemon's.
    pub fn set_dsr_ipip(&mut self, on: bool) -> Result<(), RuleError> {
        self.set_and_refresh(|s| &mut s.dsr_ipip, on)
    }

    /// Set the daemon-wide setting `field` to `value` and rebuild; if the
    /// rebuild fails, the setting goes back to what it was.
    fn set_and_refresh<T>(
        &mut self,
        field: fn(&mut Self) -> &mut T,
        value: T,
    ) -> Result<(), RuleError> {
        let old = std::mem::replace(field(self), value);
        let res = self.refresh();
        if res.is_err() {
            *field(self) = old;
        }
        res
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

    fn publish(&mut self, tables: Tables) {
        let prev = self.handle.current();
        self.handle.publish(tables);
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
            update: self.handle.current().begin_update(),
            changed: false,
        });
        let out = ops.into_iter().map(|op| self.apply_rule_op(op)).collect();
        self.end_group();
        out
    }

    fn apply_rule_op(&mut self, op: RuleOp) -> Result<(), RuleError> {
        match op {
            RuleOp::Post(r) => self.post_rule(*r),
            RuleOp::Delete(k) => self.delete_rule(&k),
        }
    }

    /// Publish what the group changed (if anything) and leave group mode.
    fn end_group(&mut self) {
        if let Some(g) = self.group.take() {
            if g.changed {
                self.publish(g.update.finish());
            }
        }
    }

    /// Apply rule changes (`None` removes the rule): build the next snapshot
    /// from the current one, rebuilding only these rules, publish it, then
    /// make the changes the state. Give each key once. In a group, a single
    /// change goes into the group's snapshot; several end the group first
    /// (they must be taken or refused together) and start a new one after.
    fn change_rules(
        &mut self,
        changes: Vec<(ServiceKey, Option<ValidRule>)>,
    ) -> Result<(), RuleError> {
        if self.group.is_some() && changes.len() > 1 {
            self.end_group();
            let res = self.change_rules(changes);
            self.group = Some(Group {
                update: self.handle.current().begin_update(),
                changed: false,
            });
            return res;
        }
        if !self.deferred {
            let published = self.handle.current();
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
                        self.publish(tables);
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
        let current = self.handle.current();
        if !current.matches(&spec) {
            let tables = Tables::build(spec, &current).map_err(build_error)?;
            self.publish(tables);
        }
        Ok(())
    }

    /// The dataplane form of a rule: endpoint states from the probe results,
    /// IPIP from the daemon's default.
    fn service_for(&self, r: &ValidRule) -> ServiceSpec {
        let mut service = r.service.clone();
        if self.dsr_ipip && service.mode == NatMode::Dsr && service.key.vip.is_ipv4() {
            service.dsr_ipip = true;
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
    fn spec(&self) -> TablesSpec {
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

    /// Every endpoint of every rule, in rule order, with its state and counters.
    pub fn endpoint_rows(&self, view: &dyn DataplaneView) -> Vec<EndpointRow<'_>> {
        let tables = self.handle.current();
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
                let (packets, bytes) = ids
                    .get(&(r.service.key, e.addr, e.port))
                    .map_or((0, 0), |id| view.endpoint_counters(*id));
                EndpointRow {
                    rule: r,
                    endpoint: e,
                    up: endpoint_up(&self.status, &self.holds, r, e),
                    packets,
                    bytes,
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

    fn derived_probes(&self) -> BTreeMap<String, Probe> {
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
        self.cistate.insert(
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
        self.cistate.values().cloned().collect()
    }
}

/// An endpoint is up unless an operator holds its host down, or its rule is
/// monitored and the last result of its probe entry (by name; a posted entry
/// of that name replaces the probe but shares the result) was a failure.
fn endpoint_up(
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
fn add_refs(refs: &mut ProbeRefs, r: &ValidRule, delta: i32) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{StaticNet, StaticView};
    use crate::model::{parse_value, EpProbe};
    use proptest::prelude::*;
    use serde_json::json;

    fn state() -> ControlState {
        ControlState::new(TablesHandle::new(), Arc::new(StaticNet::default()))
    }

    fn rule(v: serde_json::Value) -> Result<ValidRule, crate::error::ApiError> {
        Ok(parse_value::<LbRule>(v)?.validate()?)
    }

    fn tcp(vip: &str, port: u16, portmax: u16, eps: &[&str]) -> serde_json::Value {
        let eps: Vec<_> = eps
            .iter()
            .map(|e| json!({"endpointIP": e, "targetPort": 0, "weight": 1}))
            .collect();
        json!({"serviceArguments": {"externalIP": vip, "port": port, "portMax": portmax, "protocol": "tcp"},
               "endpoints": eps})
    }

    #[test]
    fn a_build_error_changes_nothing() {
        let mut st = state();
        st.post_rule(rule(tcp("192.0.2.1", 80, 90, &["10.0.0.1"])).expect("valid"))
            .expect("accepted");
        let g = st.handle().current().generation;
        let err = st
            .post_rule(rule(tcp("192.0.2.1", 85, 0, &["10.0.0.2"])).expect("valid"))
            .expect_err("overlap");
        assert!(matches!(err, RuleError::MalformedService(_)), "{err}");
        assert_eq!(st.rules().count(), 1);
        assert_eq!(st.handle().current().generation, g);
    }

    #[test]
    fn batch_builds_once_and_rolls_back_whole() {
        let mut st = state();
        let out = st.batch(|st| {
            for p in [80, 81, 82] {
                st.post_rule(rule(tcp("192.0.2.1", p, 0, &["10.0.0.1"])).expect("valid"))
                    .expect("accepted");
            }
        });
        assert!(out.is_ok());
        assert_eq!(st.handle().current().generation, 1);
        assert_eq!(st.handle().current().services.len(), 3);
        let out = st.batch(|st| {
            st.post_rule(rule(tcp("192.0.2.2", 10, 20, &["10.0.0.1"])).expect("valid"))
                .expect("no build inside a batch");
            st.post_rule(rule(tcp("192.0.2.2", 15, 0, &["10.0.0.1"])).expect("valid"))
                .expect("no build inside a batch");
        });
        assert!(out.is_err(), "the overlap shows at the one build");
        assert_eq!(st.rules().count(), 3, "rolled back whole");
        assert_eq!(st.handle().current().generation, 1);
    }

    #[test]
    fn many_probe_results_make_one_snapshot() {
        let mut st = state();
        let mut r = tcp("192.0.2.1", 80, 0, &["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        r["serviceArguments"]["monitor"] = true.into();
        st.post_rule(rule(r).expect("valid")).expect("accepted");
        let g = st.handle().current().generation;
        let status = |ok| ProbeStatus {
            ok,
            delays: Default::default(),
        };
        let down = |names: &[&str]| -> Vec<(String, ProbeStatus)> {
            names
                .iter()
                .map(|n| (n.to_string(), status(false)))
                .collect()
        };
        st.set_probe_statuses(down(&["10.0.0.1_tcp_0", "10.0.0.3_tcp_0", "nothing"]))
            .expect("accepted");
        let t = st.handle().current();
        assert_eq!(t.generation, g + 1, "one snapshot for the burst");
        let states: Vec<EndpointState> = t.services[0].endpoints.iter().map(|e| e.state).collect();
        assert_eq!(
            states,
            [
                EndpointState::Down,
                EndpointState::Active,
                EndpointState::Down
            ]
        );
        // The same results again: nothing to publish.
        st.set_probe_statuses(down(&["10.0.0.1_tcp_0", "10.0.0.3_tcp_0"]))
            .expect("accepted");
        assert_eq!(st.handle().current().generation, g + 1);
    }

    #[test]
    fn probe_results_for_unknown_entries_are_ignored() {
        let mut st = state();
        let down = ProbeStatus {
            ok: false,
            delays: Default::default(),
        };
        st.set_probe_status("nothing", down.clone())
            .expect("ignored");
        assert_eq!(st.handle().current().generation, 0);
        let ep: EpProbe =
            parse_value(json!({"hostName": "10.0.0.1", "probeType": "ping"})).expect("valid");
        st.post_probe(ep.validate().expect("valid"))
            .expect("accepted");
        st.set_probe_status("10.0.0.1_ping_0", down)
            .expect("recorded");
        assert_eq!(st.probes_view()[0].currstate, "nok");
        // Not used by any rule: no table change.
        assert_eq!(st.handle().current().generation, 0);
        assert_eq!(
            st.delete_probe("10.0.0.1_tcp_0"),
            Err(RuleError::HostNotFound)
        );
        st.delete_probe("10.0.0.1_ping_0").expect("deleted");
        assert!(st.probes_view().is_empty());
    }

    #[test]
    fn maglev_sizes_are_primes_in_range() {
        use xlb_dataplane::select::maglev::MAX_TABLE_SIZE;
        let usable = |m: usize| MaglevSize::new(m).is_ok();
        assert!(usable(MaglevSize::MIN) && usable(MaglevSize::MAX));
        assert!((MAX_ENDPOINTS_PER_SERVICE..MaglevSize::MIN).all(|m| !is_table_size(m)));
        assert!((MaglevSize::MAX + 1..=MAX_TABLE_SIZE).all(|m| !is_table_size(m)));
        assert_eq!(MaglevSize::default().get(), 65537);
        assert_eq!(
            "131071".parse::<MaglevSize>().map(MaglevSize::get),
            Ok(131071)
        );
        let err = |s: &str| s.parse::<MaglevSize>().expect_err(s).to_string();
        assert_eq!(
            err("65536"),
            "65536 is not a prime, which Maglev needs; the nearest primes are 65521 and 65537"
        );
        assert_eq!(
            err("31"),
            "31 is out of range: give a prime from 37 to 16777213"
        );
        assert_eq!(
            err("16777259"),
            "16777259 is out of range: give a prime from 37 to 16777213"
        );
        assert_eq!(
            err("0"),
            "0 is out of range: give a prime from 37 to 16777213"
        );
        assert_eq!(err("-1"), r#""-1" is not a whole number"#);
        assert_eq!(err("64k"), r#""64k" is not a whole number"#);
    }

    #[test]
    fn maglev_size_reaches_every_build() {
        let mut st = state();
        st.set_maglev_size(MaglevSize::new(251).expect("prime"))
            .expect("nothing to refuse");
        let mut hash = tcp("192.0.2.1", 80, 0, &["10.0.0.1", "10.0.0.2"]);
        hash["serviceArguments"]["sel"] = 1.into();
        st.post_rule(rule(hash).expect("valid")).expect("accepted");
        let slots = |st: &ControlState| {
            let t = st.handle().current();
            t.services[0].maglev.as_ref().map(|m| m.slots().len())
        };
        assert_eq!(slots(&st), Some(251), "an incremental update keeps it");
        st.refresh().expect("same state");
        st.set_snat_addrs(vec!["192.0.2.99".parse().expect("ip")])
            .expect("whole rebuild");
        assert_eq!(slots(&st), Some(251), "a whole rebuild keeps it");
        st.set_maglev_size(MaglevSize::default()).expect("accepted");
        assert_eq!(slots(&st), Some(65537));
    }

    #[test]
    fn daemon_dsr_ipip_covers_ipv4_dsr_rules_only() {
        let mut st = state();
        let dsr = |vip: &str, ep: &str| {
            json!({"serviceArguments": {"externalIP": vip, "port": 80, "protocol": "tcp", "sel": 1, "mode": 3},
                   "endpoints": [{"endpointIP": ep, "targetPort": 80, "weight": 1}]})
        };
        for r in [
            dsr("192.0.2.1", "10.0.0.1"),
            dsr("2001:db8::1", "2001:db8:1::1"),
            tcp("192.0.2.2", 80, 0, &["10.0.0.1"]),
        ] {
            st.post_rule(rule(r).expect("valid")).expect("accepted");
        }
        let ipip = |st: &ControlState| -> Vec<(String, bool)> {
            let t = st.handle().current();
            let mut v: Vec<_> = t
                .services
                .iter()
                .map(|s| (s.spec.key.vip.to_string(), s.spec.dsr_ipip))
                .collect();
            v.sort();
            v
        };
        let off = [
            ("192.0.2.1".to_string(), false),
            ("192.0.2.2".to_string(), false),
            ("2001:db8::1".to_string(), false),
        ];
        assert_eq!(ipip(&st), off);
        st.set_dsr_ipip(true).expect("accepted");
        assert_eq!(
            ipip(&st),
            [
                ("192.0.2.1".to_string(), true),
                ("192.0.2.2".to_string(), false),
                ("2001:db8::1".to_string(), false),
            ]
        );
        // What GET shows is the rule's own setting, not the daemon's.
        let view = StaticView::new();
        assert!(st.rules_view(&view).iter().all(|r| !r.serviceargs.dsripip));
        st.set_dsr_ipip(false).expect("accepted");
        assert_eq!(ipip(&st), off);
    }

    /// One random API operation.
    #[derive(Debug, Clone)]
    enum Op {
        Post {
            vip: u8,
            port: u16,
            portmax: u16,
            proto: u8,
            oper: u8,
            sel: u8,
            mode: u8,
            eps: Vec<(u8, u16, u8)>,
        },
        Delete {
            vip: u8,
            port: u16,
            proto: u8,
        },
        DeleteAll,
        ProbeDown(u8, u16, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (
                0u8..3,
                prop_oneof![Just(0u16), Just(80), Just(81), Just(1000)],
                prop_oneof![Just(0u16), Just(85), Just(1005)],
                0u8..4,
                0u8..3,
                0u8..7,
                0u8..6,
                proptest::collection::vec((0u8..4, prop_oneof![Just(0u16), Just(80), Just(8080)], 0u8..3), 0..5),
            )
                .prop_map(|(vip, port, portmax, proto, oper, sel, mode, eps)| Op::Post {
                    vip, port, portmax, proto, oper, sel, mode, eps,
                }),
            2 => (0u8..3, prop_oneof![Just(80u16), Just(81), Just(1000)], 0u8..4)
                .prop_map(|(vip, port, proto)| Op::Delete { vip, port, proto }),
            1 => Just(Op::DeleteAll),
            2 => (0u8..4, prop_oneof![Just(80u16), Just(8080)], any::<bool>())
                .prop_map(|(e, p, ok)| Op::ProbeDown(e, p, ok)),
        ]
    }

    const PROTOS: [&str; 4] = ["tcp", "udp", "icmp", "sctp"];

    fn apply(st: &mut ControlState, op: &Op) -> Result<(), String> {
        match op {
            Op::Post {
                vip,
                port,
                portmax,
                proto,
                oper,
                sel,
                mode,
                eps,
            } => {
                let eps: Vec<_> = eps
                    .iter()
                    .map(|(e, p, w)| json!({"endpointIP": format!("10.0.0.{e}"), "targetPort": p, "weight": w}))
                    .collect();
                let v = json!({"serviceArguments": {
                    "externalIP": format!("192.0.2.{vip}"), "port": port, "portMax": portmax,
                    "protocol": PROTOS[usize::from(*proto)], "oper": oper, "sel": sel, "mode": mode,
                    "monitor": true},
                    "endpoints": eps});
                let r = rule(v).map_err(|e| e.to_string())?;
                st.post_rule(r).map_err(|e| e.to_string())
            }
            Op::Delete { vip, port, proto } => {
                let key = ServiceKey {
                    vip: format!("192.0.2.{vip}").parse().map_err(|_| "ip")?,
                    proto: crate::rules::parse_proto(PROTOS[usize::from(*proto)]).ok_or("proto")?,
                    port_min: *port,
                    port_max: *port,
                    block: 0,
                };
                st.delete_rule(&key).map_err(|e| e.to_string())
            }
            Op::DeleteAll => st.delete_all_rules().map_err(|e| e.to_string()),
            Op::ProbeDown(e, p, ok) => st
                .set_probe_status(
                    &format!("10.0.0.{e}_tcp_{p}"),
                    ProbeStatus {
                        ok: *ok,
                        delays: Default::default(),
                    },
                )
                .map_err(|e| e.to_string()),
        }
    }

    proptest! {
        /// Whatever sequence of requests arrives: a rejected one changes neither
        /// the state nor the published tables, and after every request the
        /// published tables are exactly what the state describes.
        #[test]
        fn published_tables_always_match_the_state(ops in proptest::collection::vec(op(), 1..40)) {
            let mut st = state();
            let view = StaticView::new();
            for op in &ops {
                let before = (st.rules_view(&view), st.probes_view(), st.handle().current().generation);
                let res = apply(&mut st, op);
                let t = st.handle().current();
                if res.is_err() {
                    prop_assert_eq!(&before.0, &st.rules_view(&view));
                    prop_assert_eq!(&before.1, &st.probes_view());
                    prop_assert_eq!(before.2, t.generation);
                }
                prop_assert!(t.matches(&st.spec()), "published tables differ from the state");
                prop_assert_eq!(t.services.len(), st.rules().count());
                for row in st.endpoint_rows(&view) {
                    let s = &t.services[t.service_index(&row.rule.service.key).expect("rule published")];
                    let e = s.endpoints.iter().find(|e| {
                        IpAddr::from(e.addr) == row.endpoint.addr && e.port == row.endpoint.port
                    });
                    prop_assert_eq!(row.up, e.expect("endpoint published").state == EndpointState::Active);
                }
                // The incremental index of implied probe entries agrees with a full derivation.
                let derived: std::collections::BTreeSet<String> = st.derived_probes().into_keys().collect();
                let indexed: std::collections::BTreeSet<String> = st.probe_refs.keys().cloned().collect();
                prop_assert_eq!(derived, indexed);
                for k in st.status.keys() {
                    prop_assert!(st.probe_refs.contains_key(k) || st.probes.contains_key(k), "stale result {}", k);
                }
            }
        }
    }
}

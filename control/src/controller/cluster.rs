//! Cluster instances, as loxilb has them, and who sets their roles.
//!
//! A rule belongs to the instance named after the `:` in its name
//! (`ns_svc:llb-inst1`), `llb-inst0` without one. Each instance has a role
//! on this node — MASTER, BACKUP, FAULT, STOP or NOT_DEFINED — and a
//! floating address (`vip`). MASTER and NOT_DEFINED serve the instance's
//! VIPs (hold them on the host, answer ARP/NDP, steer their traffic to the
//! workers); BACKUP, FAULT and STOP hold none, but keep every table built,
//! so that taking over is one publish.
//!
//! Who sets a role, per instance: a controller through the API (kube-loxilb
//! `--setRoles`, keepalived's notify hook: `POST /config/cistate`), or xlb's
//! own election (`xlb run --cluster`), which drives every instance no
//! controller has set. Once a controller sets an instance, the election
//! stays out of its way. Without either, an instance is NOT_DEFINED and
//! serves, as a single node does.
//!
//! loxilb's semantics kept (`pkg/loxinet/cluster.go` `CIStateUpdate`): an
//! unknown instance is created on first use, `llb-inst0` exists from the
//! start, states are exact upper-case names, and a state equal to the
//! current one changes nothing (not even `vip`). Where xlb differs: a body
//! with an unknown state or an unparsable `vip` changes nothing at all
//! (loxilb creates the instance first), an empty `instance` means
//! `llb-inst0` (loxilb creates an instance named ""), and `sync` is
//! always `null` as in loxilb.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use super::ControlState;
use crate::error::RuleError;
use crate::ha::{MemberStatus, Standing, Transition};
use crate::model::{CiMember, CiStateIn, CiStateOut};
use crate::rules::ValidRule;
use xlb_dataplane::tables::{HoldGate, HoldSpec};

/// The instance loxilb reports before any `POST /config/cistate`.
pub const DEFAULT_INSTANCE: &str = "llb-inst0";

/// An instance's role on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the instance's VIPs.
    Master,
    /// Another node holds them.
    Backup,
    /// This node cannot serve them.
    Fault,
    /// Stopped.
    Stop,
    /// No HA: serves, as a single node.
    NotDefined,
}

impl Role {
    /// Every role, in loxilb's order of its state names.
    pub const ALL: [Role; 5] = [
        Role::Master,
        Role::Backup,
        Role::Fault,
        Role::Stop,
        Role::NotDefined,
    ];

    /// loxilb's exact name for a role.
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "MASTER",
            Role::Backup => "BACKUP",
            Role::Fault => "FAULT",
            Role::Stop => "STOP",
            Role::NotDefined => "NOT_DEFINED",
        }
    }

    /// The role named exactly `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// Whether this node serves an instance in this role.
    pub fn serves(self) -> bool {
        matches!(self, Role::Master | Role::NotDefined)
    }

    fn of(s: Standing) -> Role {
        match s {
            Standing::Holder => Role::Master,
            Standing::Backup => Role::Backup,
            Standing::Fault => Role::Fault,
        }
    }
}

/// Who set an instance's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetBy {
    /// Nobody yet: the election's role if one runs, else NOT_DEFINED.
    Nobody,
    /// A controller, through `POST /config/cistate`.
    Api,
}

#[derive(Debug, Clone)]
struct Instance {
    /// The role a controller set (meaningful when `set_by` is `Api`).
    role: Role,
    /// The floating address; `None` is loxilb's `0.0.0.0`.
    vip: Option<IpAddr>,
    set_by: SetBy,
    changed: Instant,
    reason: String,
}

/// What the election last said, for the instances it drives.
#[derive(Debug, Clone)]
struct Elected {
    transition: Transition,
    changed: Instant,
    members: Vec<MemberStatus>,
    /// The election's datagrams by outcome (accepted, malformed, ...).
    datagrams: BTreeMap<&'static str, u64>,
}

/// An instance's role as last seen, for the metrics: how often it changed
/// and when it last did.
#[derive(Debug, Clone)]
struct Observed {
    role: Role,
    transitions: u64,
    since: Instant,
}

/// One instance's role for the metrics.
#[derive(Debug, Clone)]
pub struct RoleRow {
    /// The instance.
    pub instance: String,
    /// Its role now.
    pub role: Role,
    /// Role changes since xlb started.
    pub transitions: u64,
    /// Since the last change (or the start).
    pub since: std::time::Duration,
}

/// Every cluster instance this node knows, by name, and the election's view.
#[derive(Debug, Clone)]
pub struct Instances {
    map: BTreeMap<String, Instance>,
    /// `Some` when `--cluster` runs the election.
    elected: Option<Elected>,
    observed: BTreeMap<String, Observed>,
}

impl Default for Instances {
    /// Only [`DEFAULT_INSTANCE`], NOT_DEFINED, as loxilb starts.
    fn default() -> Instances {
        let mut map = BTreeMap::new();
        map.insert(DEFAULT_INSTANCE.to_string(), Instance::new());
        let mut i = Instances {
            map,
            elected: None,
            observed: BTreeMap::new(),
        };
        i.observe();
        i
    }
}

impl Instance {
    fn new() -> Instance {
        Instance {
            role: Role::NotDefined,
            vip: None,
            set_by: SetBy::Nobody,
            changed: Instant::now(),
            reason: "start".into(),
        }
    }
}

impl Instances {
    /// The role of instance `name` now (also of one no POST created: a
    /// rule's instance that does not exist yet is served as NOT_DEFINED, or
    /// follows the election).
    pub fn role(&self, name: &str) -> Role {
        match self.map.get(name) {
            Some(i) if i.set_by == SetBy::Api => i.role,
            _ => self
                .elected
                .as_ref()
                .map_or(Role::NotDefined, |e| Role::of(e.transition.standing)),
        }
    }

    /// Instance `name`'s floating address, if set.
    pub fn vip(&self, name: &str) -> Option<IpAddr> {
        self.map.get(name).and_then(|i| i.vip)
    }

    /// Note every instance's role now: a change counts as a transition.
    fn observe(&mut self) {
        let now = Instant::now();
        let roles: Vec<(String, Role)> =
            self.map.keys().map(|n| (n.clone(), self.role(n))).collect();
        for (name, role) in roles {
            match self.observed.get_mut(&name) {
                Some(o) if o.role != role => {
                    o.role = role;
                    o.transitions += 1;
                    o.since = now;
                }
                Some(_) => {}
                None => {
                    self.observed.insert(
                        name,
                        Observed {
                            role,
                            transitions: 0,
                            since: now,
                        },
                    );
                }
            }
        }
    }

    /// Every instance's role, its changes and the time since the last.
    pub fn role_rows(&self) -> Vec<RoleRow> {
        self.observed
            .iter()
            .map(|(name, o)| RoleRow {
                instance: name.clone(),
                role: o.role,
                transitions: o.transitions,
                since: o.since.elapsed(),
            })
            .collect()
    }

    /// The election's members and datagram counters, when it runs.
    pub fn election(&self) -> Option<(&[MemberStatus], &BTreeMap<&'static str, u64>)> {
        self.elected
            .as_ref()
            .map(|e| (e.members.as_slice(), &e.datagrams))
    }

    /// Whether an election drives the instances no controller set.
    pub fn elected(&self) -> bool {
        self.elected.is_some()
    }

    /// Whether any role is in effect (the election, or a role a controller
    /// set): without one, every address is served and no hold set is needed.
    pub fn active(&self) -> bool {
        self.elected() || self.map.values().any(|i| i.set_by == SetBy::Api)
    }
}

/// The instance a rule named `name` belongs to: the text after the first
/// `:` up to the next (loxilb: `strings.Split(name, ":")[1]`), else
/// [`DEFAULT_INSTANCE`].
pub fn instance_of(name: &str) -> &str {
    match name.split(':').nth(1) {
        Some(i) => i,
        None => DEFAULT_INSTANCE,
    }
}

/// Which addresses this node serves, by who decides. Addresses in neither
/// set are always served (NOT_DEFINED, or MASTER set by a controller).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldSets {
    /// VIPs and floating addresses of instances a controller set to a role
    /// that does not serve (BACKUP, FAULT, STOP): never served.
    pub idle: BTreeSet<IpAddr>,
    /// Those of the instances the election drives: served while the
    /// election says this node holds, and only then.
    pub elected: BTreeSet<IpAddr>,
}

impl ControlState {
    /// The addresses each kind of role decides. A VIP belongs to the
    /// instance of its first rule in key order (loxilb: of the first rule
    /// that referenced it); an instance's floating `vip` to that instance.
    pub fn hold_sets(&self) -> HoldSets {
        self.hold_sets_over(self.rules.values())
    }

    /// [`ControlState::hold_sets`] for the rules `rules` (in key order).
    pub(super) fn hold_sets_over<'a>(
        &'a self,
        rules: impl Iterator<Item = &'a ValidRule>,
    ) -> HoldSets {
        let mut sets = HoldSets::default();
        if !self.instances.active() {
            return sets;
        }
        let mut owner: BTreeMap<IpAddr, &str> = BTreeMap::new();
        for r in rules {
            owner
                .entry(r.service.key.vip)
                .or_insert_with(|| instance_of(&r.doc.serviceargs.name));
        }
        // The daemon's full-NAT addresses (`--snat-addrs`) float with the
        // default instance unless an instance names one as its own.
        for a in &self.snat_addrs {
            owner.entry(*a).or_insert(DEFAULT_INSTANCE);
        }
        for (name, i) in &self.instances.map {
            if let Some(v) = i.vip {
                owner.insert(v, name);
            }
        }
        for (addr, inst) in owner {
            match self.instances.map.get(inst) {
                Some(i) if i.set_by == SetBy::Api && !i.role.serves() => {
                    sets.idle.insert(addr);
                }
                Some(i) if i.set_by == SetBy::Api => {}
                _ if self.instances.elected() => {
                    sets.elected.insert(addr);
                }
                _ => {}
            }
        }
        sets
    }

    /// The roles as the tables carry them, for the rules `rules`.
    pub(super) fn hold_spec_over<'a>(
        &'a self,
        rules: impl Iterator<Item = &'a ValidRule>,
    ) -> HoldSpec {
        let sets = self.hold_sets_over(rules);
        HoldSpec {
            idle: sets.idle.into_iter().collect(),
            elected: sets.elected.into_iter().collect(),
            gate: self.gate.clone(),
        }
    }

    /// The election's flag, which the tables of this state share: the
    /// election sets it (through [`HoldGate::set`]) the moment its standing
    /// changes, without waiting for this state's controller.
    pub fn gate(&self) -> HoldGate {
        self.gate.clone()
    }

    /// A flag set while a controller (kube-loxilb, keepalived's hook) has
    /// made any instance MASTER on this node: with the election's
    /// [`ControlState::gate`], whether this node's flows are the ones the
    /// other members copy (connection sync).
    pub fn masters(&self) -> HoldGate {
        self.masters.clone()
    }

    /// `POST /config/cistate`.
    pub fn post_cistate(&mut self, ci: &CiStateIn) -> Result<(), RuleError> {
        let role = Role::parse(&ci.state).ok_or(RuleError::InvalidCiState)?;
        let vip = match ci.vip.trim() {
            "" | "0.0.0.0" => None,
            v => Some(v.parse::<IpAddr>().map_err(|_| {
                RuleError::MalformedCiState(format!("vip {v:?} is not an address"))
            })?),
        };
        let name = match ci.instance.as_str() {
            "" => DEFAULT_INSTANCE,
            i => i,
        };
        let old = self.instances.clone();
        let inst = self
            .instances
            .map
            .entry(name.to_string())
            .or_insert_with(Instance::new);
        if inst.set_by == SetBy::Api && inst.role == role {
            // loxilb: an unchanged state changes nothing, not even vip.
            return Ok(());
        }
        let was = self.instances.role(name);
        let inst = self
            .instances
            .map
            .get_mut(name)
            .ok_or_else(|| RuleError::Internal("instance vanished".into()))?;
        inst.role = role;
        inst.vip = vip;
        inst.set_by = SetBy::Api;
        inst.changed = Instant::now();
        inst.reason = "set through the API".into();
        if let Err(e) = self.refresh() {
            self.instances = old;
            return Err(e);
        }
        self.instances.observe();
        self.masters.set(
            self.instances
                .map
                .values()
                .any(|i| i.set_by == SetBy::Api && i.role == Role::Master),
        );
        if was != role {
            tracing::info!(
                instance = name,
                from = was.name(),
                to = role.name(),
                vip = ?vip,
                "cluster instance role set through the API"
            );
        }
        Ok(())
    }

    /// The election's new standing: every instance no controller set
    /// follows it.
    pub fn set_elected(
        &mut self,
        t: Transition,
        members: Vec<MemberStatus>,
    ) -> Result<(), RuleError> {
        let old = self.instances.elected.clone();
        let changed = old.as_ref().is_none_or(|e| e.transition != t);
        self.instances.elected = Some(Elected {
            changed: if changed {
                Instant::now()
            } else {
                old.as_ref().map_or_else(Instant::now, |e| e.changed)
            },
            transition: t,
            members,
            datagrams: old
                .as_ref()
                .map(|e| e.datagrams.clone())
                .unwrap_or_default(),
        });
        if !changed {
            return Ok(());
        }
        let res = self.refresh();
        match res {
            Ok(()) => self.instances.observe(),
            Err(_) => self.instances.elected = old,
        }
        res
    }

    /// Update the members' liveness and the datagram counters the election
    /// reports (no table change).
    pub fn set_cluster_members(
        &mut self,
        members: Vec<MemberStatus>,
        datagrams: BTreeMap<&'static str, u64>,
    ) {
        if let Some(e) = &mut self.instances.elected {
            e.members = members;
            e.datagrams = datagrams;
        }
    }

    /// The role-set of every instance (cluster instances and the ones rules name).
    pub fn instances(&self) -> &Instances {
        &self.instances
    }

    /// `GET /config/cistate/all`: loxilb's fields, plus, when the election
    /// runs, who set the role, why, since when, and the members.
    pub fn cistate_view(&self) -> Vec<CiStateOut> {
        let elected = self.instances.elected.as_ref();
        let members: Option<Vec<CiMember>> = elected.map(|e| {
            e.members
                .iter()
                .map(|m| CiMember {
                    addr: m.addr.to_string(),
                    me: m.me,
                    up: m.up,
                })
                .collect()
        });
        self.instances
            .map
            .iter()
            .map(|(name, i)| {
                let role = self.instances.role(name);
                let mut out = CiStateOut {
                    instance: name.clone(),
                    state: role.name().into(),
                    sync: None,
                    vip: i.vip.map_or_else(|| "0.0.0.0".into(), |v| v.to_string()),
                    ..CiStateOut::default()
                };
                if let Some(e) = elected {
                    let (by, changed, reason) = match i.set_by {
                        SetBy::Api => ("api", i.changed, i.reason.clone()),
                        SetBy::Nobody => ("election", e.changed, e.transition.reason.to_string()),
                    };
                    out.set_by = Some(by.into());
                    out.changed_secs_ago = Some(changed.elapsed().as_secs_f64());
                    out.reason = Some(reason);
                    out.holder = e
                        .transition
                        .holder
                        .and_then(|h| e.members.get(h))
                        .map(|m| m.addr.to_string());
                    out.members = members.clone();
                }
                out
            })
            .collect()
    }
}

//! A scenario's control flow, compiled once from the wire's flat list of
//! instructions (`v1::Op`): groups, loops, conditions, choices and `set`s
//! over the scenario's requests. The engine walks it with a program
//! counter ([`crate::engine`]); nothing here allocates per pass.

use std::time::Duration;

use loadfleet_proto::v1;

use crate::builtin::Builtin;
use crate::expr::Expr;
use crate::template::VarTable;

/// Where a `for_each` finds its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListRef {
    /// Every match of an extraction with `match = "all"`, per user.
    Extracted(usize),
    /// A column of a data file: every row's value.
    Column { data: usize, column: usize },
}

/// One pass of a loop.
#[derive(Debug, Clone)]
pub struct LoopTest {
    pub slot: usize,
    /// Most passes; `u64::MAX` when only time bounds it.
    pub max: u64,
    pub condition: Option<Expr>,
    pub during: bool,
    pub list: Option<(ListRef, usize)>,
    pub exit: usize,
    /// The group row that counts this loop's bound being hit.
    pub bound_step: Option<usize>,
    /// Per-use built-ins the condition reads.
    pub fresh: Box<[usize]>,
}

/// One instruction (see `v1::Op` in fleet.proto).
#[derive(Debug, Clone)]
pub enum Op {
    Request(usize),
    GroupBegin {
        slot: usize,
        step: usize,
        include_think: bool,
    },
    GroupEnd(usize),
    Jump(usize),
    Unless {
        condition: Box<Expr>,
        fresh: Box<[usize]>,
        to: usize,
    },
    LoopStart {
        slot: usize,
        during: Option<Duration>,
    },
    LoopTest(Box<LoopTest>),
    Set {
        slot: usize,
        expression: Box<Expr>,
        fresh: Box<[usize]>,
    },
    Once(usize),
    Pick {
        /// Running sums of the weights.
        cumulative: Box<[u64]>,
        to: Box<[usize]>,
    },
    Turn {
        slot: usize,
        to: Box<[usize]>,
    },
    Percent {
        slot: usize,
        percent: f64,
        to: usize,
    },
    Pause(crate::journey::Think),
}

/// A scenario's program and the per-user state it needs.
#[derive(Debug, Clone, Default)]
pub struct Program {
    pub ops: Vec<Op>,
    /// Loop counters, group timers and choice counters a user keeps.
    pub loops: usize,
    pub groups: usize,
    pub turns: usize,
    /// The deepest nesting of groups.
    pub group_depth: usize,
}

/// What a program may refer to.
pub struct Names<'a> {
    pub steps: usize,
    pub step_ids: usize,
    pub group_steps: &'a [bool],
    pub lists: &'a VarTable,
    /// Each data file's name and columns.
    pub data: &'a [(&'a str, &'a [String])],
}

/// The per-use built-in slots among `slots`.
pub fn fresh(slots: &[usize], vars: &VarTable) -> Box<[usize]> {
    slots
        .iter()
        .copied()
        .filter(|&s| {
            Builtin::parse(vars.name(s)).is_some_and(|b| b.is_ok_and(|b| !b.per_iteration()))
        })
        .collect()
}

impl Program {
    /// Each of `steps` once, in order (a scenario without control flow).
    pub fn straight(steps: usize) -> Program {
        Program {
            ops: (0..steps).map(Op::Request).collect(),
            ..Program::default()
        }
    }

    pub fn compile(
        wire: Vec<v1::Op>,
        names: &Names<'_>,
        vars: &mut VarTable,
    ) -> Result<Program, String> {
        use v1::op::Op as W;
        let len = wire.len();
        let mut p = Program::default();
        let jump = |to: u32, at: usize| -> Result<usize, String> {
            let to = to as usize;
            if to > len {
                return Err(format!(
                    "op {at}: jumps to {to}, past the program's end {len}"
                ));
            }
            Ok(to)
        };
        let slot_max = |n: u32, max: &mut usize| {
            *max = (*max).max(n as usize + 1);
            n as usize
        };
        let expr = |text: &str, cond: bool, at: usize, vars: &mut VarTable| {
            vars.watch();
            let e = if cond {
                Expr::condition(text, vars)
            } else {
                Expr::parse(text, vars)
            }
            .map_err(|e| format!("op {at}: `{text}`: {e}"));
            let read = vars.watched();
            e.map(|e| (e, fresh(&read, vars)))
        };
        let mut depth = 0usize;
        for (at, op) in wire.into_iter().enumerate() {
            let op = op
                .op
                .ok_or_else(|| format!("op {at} is empty (a newer controller?)"))?;
            p.ops.push(match op {
                W::Request(i) => {
                    if i as usize >= names.steps {
                        return Err(format!("op {at}: request {i}, but {} steps", names.steps));
                    }
                    Op::Request(i as usize)
                }
                W::GroupBegin(g) => {
                    let step = g.step as usize;
                    if !names.group_steps.get(step).copied().unwrap_or(false) {
                        return Err(format!("op {at}: step {step} is not a group"));
                    }
                    depth += 1;
                    p.group_depth = p.group_depth.max(depth);
                    Op::GroupBegin {
                        slot: slot_max(g.slot, &mut p.groups),
                        step,
                        include_think: g.include_think,
                    }
                }
                W::GroupEnd(slot) => {
                    depth = depth.saturating_sub(1);
                    Op::GroupEnd(slot_max(slot, &mut p.groups))
                }
                W::Jump(to) => Op::Jump(jump(to, at)?),
                W::Unless(b) => {
                    let (condition, fresh) = expr(&b.condition, true, at, vars)?;
                    Op::Unless {
                        condition: Box::new(condition),
                        fresh,
                        to: jump(b.to, at)?,
                    }
                }
                W::LoopStart(l) => Op::LoopStart {
                    slot: slot_max(l.slot, &mut p.loops),
                    during: (l.during_us > 0).then(|| Duration::from_micros(l.during_us)),
                },
                W::LoopTest(l) => {
                    let (condition, fresh) = if l.condition.is_empty() {
                        (None, Box::default())
                    } else {
                        let (c, f) = expr(&l.condition, true, at, vars)?;
                        (Some(c), f)
                    };
                    let list = if l.list.is_empty() {
                        None
                    } else {
                        let list = match names.lists.get(&l.list) {
                            Some(s) => ListRef::Extracted(s),
                            None => column(&l.list, names.data)
                                .ok_or_else(|| format!("op {at}: no list `{}`", l.list))?,
                        };
                        Some((list, vars.slot(&l.item)))
                    };
                    if l.max == 0 && !l.during && list.is_none() {
                        return Err(format!("op {at}: a loop with no bound"));
                    }
                    let bound_step = match l.bound_step {
                        0 => None,
                        n if (n as usize) <= names.step_ids => Some(n as usize - 1),
                        n => return Err(format!("op {at}: bound step {} unknown", n - 1)),
                    };
                    Op::LoopTest(Box::new(LoopTest {
                        slot: slot_max(l.slot, &mut p.loops),
                        max: if l.max == 0 { u64::MAX } else { l.max },
                        condition,
                        during: l.during,
                        list,
                        exit: jump(l.exit, at)?,
                        bound_step,
                        fresh,
                    }))
                }
                W::Set(s) => {
                    let (expression, fresh) = expr(&s.expression, false, at, vars)?;
                    Op::Set {
                        slot: vars.slot(&s.name),
                        expression: Box::new(expression),
                        fresh,
                    }
                }
                W::Once(to) => Op::Once(jump(to, at)?),
                W::Pick(c) => {
                    if c.weights.len() != c.to.len() || c.to.is_empty() {
                        return Err(format!("op {at}: a choice needs one weight per branch"));
                    }
                    let mut sum = 0u64;
                    let cumulative = c
                        .weights
                        .iter()
                        .map(|&w| {
                            sum += u64::from(w);
                            sum
                        })
                        .collect();
                    if sum == 0 {
                        return Err(format!("op {at}: every weight is 0"));
                    }
                    Op::Pick {
                        cumulative,
                        to: c
                            .to
                            .iter()
                            .map(|&t| jump(t, at))
                            .collect::<Result<_, _>>()?,
                    }
                }
                W::Turn(c) => {
                    if c.to.is_empty() {
                        return Err(format!("op {at}: `in_turn` with no branch"));
                    }
                    Op::Turn {
                        slot: slot_max(c.slot, &mut p.turns),
                        to: c
                            .to
                            .iter()
                            .map(|&t| jump(t, at))
                            .collect::<Result<_, _>>()?,
                    }
                }
                W::Pause(t) => Op::Pause(
                    crate::journey::Think::of_wire(Some(t))
                        .map_err(|e| format!("op {at}: {e}"))?
                        .ok_or_else(|| format!("op {at}: a pause without a time"))?,
                ),
                W::Percent(pc) => {
                    if !(0.0..=100.0).contains(&pc.percent) {
                        return Err(format!("op {at}: percent {} outside 0..=100", pc.percent));
                    }
                    Op::Percent {
                        slot: slot_max(pc.slot, &mut p.turns),
                        percent: pc.percent,
                        to: jump(pc.to, at)?,
                    }
                }
            });
        }
        Ok(p)
    }
}

/// `name.column` of a data file.
fn column(list: &str, data: &[(&str, &[String])]) -> Option<ListRef> {
    let (name, col) = list.split_once('.')?;
    let d = data.iter().position(|d| d.0 == name)?;
    let column = data[d].1.iter().position(|c| c == col)?;
    Some(ListRef::Column { data: d, column })
}

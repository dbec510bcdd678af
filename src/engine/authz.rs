//! Authorization of an authenticated principal on a route: scopes (all-of / any-of), claim
//! conditions (equals / one-of / contains, combinable with all / any) and the object-level owner
//! check (a path parameter must equal a claim, unless an override scope is held).

use super::authn::Principal;
use super::decision::Check;
use super::Request;
use crate::policy::{ClaimsDoc, ConditionDoc, ConfigError, OperandDoc, OwnerDoc, ScopesDoc};
use serde_json::Value;

/// RFC 6749 section 3.3 scope-token characters; this also keeps scope names safe to quote in
/// `WWW-Authenticate`.
fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

pub fn compile_scope_list(
    list: &[String],
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<String> {
    for (i, s) in list.iter().enumerate() {
        if !valid_scope(s) {
            errors.push(ConfigError::new(
                format!("{path}[{i}]"),
                format!("`{s}` is not a scope token (printable ascii, no space, `\"` or `\\`)"),
            ));
        }
    }
    let mut out = list.to_vec();
    out.sort();
    out.dedup();
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operand {
    Literal(String),
    /// Lowercase header name.
    Header(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Equals(Operand),
    OneOf(Vec<String>),
    Contains(Operand),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    claim: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    param: String,
    claim: String,
    unless_scope: Option<String>,
}

/// A route's requirements, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    scopes_all: Vec<String>,
    scopes_any: Vec<String>,
    claims_all: Vec<Condition>,
    claims_any: Vec<Condition>,
    owner: Option<Owner>,
}

/// Why authorization failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Space-separated scopes to name in the challenge: the missing `all` ones, or the `any` list.
    MissingScopes(String),
    Forbidden,
}

fn operand(doc: &OperandDoc, path: &str, errors: &mut Vec<ConfigError>) -> Operand {
    match doc {
        OperandDoc::Literal(s) => Operand::Literal(s.clone()),
        OperandDoc::Header { header } => {
            let h = header.to_ascii_lowercase();
            if !crate::policy::is_identifier(&h) {
                errors.push(ConfigError::new(
                    format!("{path}.header"),
                    format!("`{header}` is not a valid header name"),
                ));
            }
            Operand::Header(h)
        }
    }
}

fn condition(doc: &ConditionDoc, path: &str, errors: &mut Vec<ConfigError>) -> Option<Condition> {
    if doc.claim.is_empty() {
        errors.push(ConfigError::new(
            format!("{path}.claim"),
            "must not be empty",
        ));
    }
    let given = usize::from(doc.equals.is_some())
        + usize::from(doc.one_of.is_some())
        + usize::from(doc.contains.is_some());
    if given != 1 {
        errors.push(ConfigError::new(
            path,
            format!(
                "a condition needs exactly one of `equals`, `one_of`, `contains`; found {given}"
            ),
        ));
        return None;
    }
    let op = match (&doc.equals, &doc.one_of, &doc.contains) {
        (Some(v), _, _) => Op::Equals(operand(v, &format!("{path}.equals"), errors)),
        (_, Some(list), _) => {
            if list.is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.one_of"),
                    "list at least one value",
                ));
            }
            Op::OneOf(list.clone())
        }
        (_, _, Some(v)) => Op::Contains(operand(v, &format!("{path}.contains"), errors)),
        _ => return None,
    };
    Some(Condition {
        claim: doc.claim.clone(),
        op,
    })
}

impl Rules {
    pub fn compile(
        scopes: Option<&ScopesDoc>,
        claims: Option<&ClaimsDoc>,
        owner: Option<&OwnerDoc>,
        params: &[String],
        at: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Rules {
        let mut rules = Rules::default();
        if let Some(s) = scopes {
            rules.scopes_all = compile_scope_list(&s.all, &format!("{at}.scopes.all"), errors);
            rules.scopes_any = compile_scope_list(&s.any, &format!("{at}.scopes.any"), errors);
            if s.all.is_empty() && s.any.is_empty() {
                errors.push(ConfigError::new(
                    format!("{at}.scopes"),
                    "list scopes in `all` or `any`, or remove `scopes`",
                ));
            }
        }
        if let Some(c) = claims {
            let list = |items: &[ConditionDoc],
                        name: &str,
                        errors: &mut Vec<ConfigError>|
             -> Vec<Condition> {
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, d)| condition(d, &format!("{at}.claims.{name}[{i}]"), errors))
                    .collect()
            };
            rules.claims_all = list(&c.all, "all", errors);
            rules.claims_any = list(&c.any, "any", errors);
            if c.all.is_empty() && c.any.is_empty() {
                errors.push(ConfigError::new(
                    format!("{at}.claims"),
                    "list conditions in `all` or `any`, or remove `claims`",
                ));
            }
        }
        if let Some(o) = owner {
            if !params.contains(&o.param) {
                errors.push(ConfigError::new(
                    format!("{at}.owner.param"),
                    format!(
                        "`{}` is not a parameter of this route's path; expected one of [{}]",
                        o.param,
                        params
                            .iter()
                            .map(|p| format!("`{p}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            let unless_scope = o.unless_scope.clone();
            if let Some(s) = &unless_scope {
                if !valid_scope(s) {
                    errors.push(ConfigError::new(
                        format!("{at}.owner.unless_scope"),
                        format!("`{s}` is not a scope token"),
                    ));
                }
            }
            rules.owner = Some(Owner {
                param: o.param.clone(),
                claim: o.claim.clone().unwrap_or_else(|| "sub".into()),
                unless_scope,
            });
        }
        rules
    }

    pub fn is_empty(&self) -> bool {
        *self == Rules::default()
    }

    /// Judges `who` on this route. `params` are the route's decoded path parameters.
    pub fn check(
        &self,
        who: &Principal,
        req: &Request<'_>,
        params: &[(String, String)],
    ) -> Result<(), Refusal> {
        let has = |s: &String| who.scopes.binary_search(s).is_ok();
        let missing: Vec<&str> = self
            .scopes_all
            .iter()
            .filter(|s| !has(s))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(Refusal::MissingScopes(missing.join(" ")));
        }
        if !self.scopes_any.is_empty() && !self.scopes_any.iter().any(has) {
            return Err(Refusal::MissingScopes(self.scopes_any.join(" ")));
        }
        let holds = |c: &Condition| evaluate(c, who, req);
        if !self.claims_all.iter().all(holds)
            || (!self.claims_any.is_empty() && !self.claims_any.iter().any(holds))
        {
            return Err(Refusal::Forbidden);
        }
        if let Some(o) = &self.owner {
            if !owner_holds(o, who, params) {
                return Err(Refusal::Forbidden);
            }
        }
        Ok(())
    }

    /// Every requirement of this route and whether `who` meets it, for `tollgate explain`. Judged
    /// with the same helpers as [`Rules::check`], which alone decides.
    pub fn explain(
        &self,
        who: &Principal,
        req: &Request<'_>,
        params: &[(String, String)],
    ) -> Vec<Check> {
        let has = |s: &String| who.scopes.binary_search(s).is_ok();
        let mut out: Vec<Check> = self
            .scopes_all
            .iter()
            .map(|s| Check {
                requirement: format!("scope `{s}`"),
                passed: has(s),
            })
            .collect();
        if !self.scopes_any.is_empty() {
            out.push(Check {
                requirement: format!("one of the scopes {}", quoted(&self.scopes_any)),
                passed: self.scopes_any.iter().any(has),
            });
        }
        for c in &self.claims_all {
            out.push(Check {
                requirement: describe(c),
                passed: evaluate(c, who, req),
            });
        }
        if !self.claims_any.is_empty() {
            let each: Vec<String> = self.claims_any.iter().map(describe).collect();
            out.push(Check {
                requirement: format!("one of: {}", each.join(" | ")),
                passed: self.claims_any.iter().any(|c| evaluate(c, who, req)),
            });
        }
        if let Some(o) = &self.owner {
            let unless = o
                .unless_scope
                .as_ref()
                .map(|s| format!(", unless scope `{s}`"))
                .unwrap_or_default();
            out.push(Check {
                requirement: format!(
                    "owner: path parameter `{}` equals claim `{}`{unless}",
                    o.param, o.claim
                ),
                passed: owner_holds(o, who, params),
            });
        }
        out
    }
}

fn quoted(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| format!("`{s}`")).collect();
    format!("[{}]", items.join(", "))
}

fn describe_operand(o: &Operand) -> String {
    match o {
        Operand::Literal(s) => format!("`{s}`"),
        Operand::Header(h) => format!("header `{h}`"),
    }
}

fn describe(c: &Condition) -> String {
    match &c.op {
        Op::Equals(o) => format!("claim `{}` equals {}", c.claim, describe_operand(o)),
        Op::OneOf(list) => format!("claim `{}` is one of {}", c.claim, quoted(list)),
        Op::Contains(o) => format!("claim `{}` contains {}", c.claim, describe_operand(o)),
    }
}

/// The owner check: the path parameter equals the claim, unless the override scope is held.
fn owner_holds(o: &Owner, who: &Principal, params: &[(String, String)]) -> bool {
    if o.unless_scope
        .as_ref()
        .is_some_and(|s| who.scopes.binary_search(s).is_ok())
    {
        return true;
    }
    let param = params
        .iter()
        .find(|(k, _)| *k == o.param)
        .map(|(_, v)| v.as_str());
    let claim = who.claims.get(&o.claim).and_then(scalar);
    !(param.is_none() || claim.is_none() || param != claim.as_deref())
}

/// A string, number or bool claim as text; `None` for other shapes.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn resolve<'r>(operand: &'r Operand, req: &Request<'r>) -> Option<&'r str> {
    match operand {
        Operand::Literal(s) => Some(s.as_str()),
        // A header that appears twice is ambiguous: the condition fails.
        Operand::Header(h) => {
            let mut values = req.header_values(h);
            let first = values.next()?;
            values.next().is_none().then_some(first)
        }
    }
}

fn evaluate(c: &Condition, who: &Principal, req: &Request<'_>) -> bool {
    let Some(value) = who.claims.get(&c.claim) else {
        return false;
    };
    match &c.op {
        Op::Equals(operand) => match (resolve(operand, req), scalar(value)) {
            (Some(want), Some(have)) => want == have,
            _ => false,
        },
        Op::OneOf(list) => scalar(value).is_some_and(|have| list.contains(&have)),
        Op::Contains(operand) => {
            let Some(want) = resolve(operand, req) else {
                return false;
            };
            match value {
                Value::Array(items) => items.iter().any(|i| scalar(i).as_deref() == Some(want)),
                // Space-separated lists such as `scope`.
                Value::String(s) => s.split(' ').any(|part| part == want),
                _ => false,
            }
        }
    }
}

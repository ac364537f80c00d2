//! Lowering: the pest pairs of one declaration to an [`ast::Decl`](super::ast::Decl).
//!
//! Each function quotes the grammar rule it handles. Token rules (`eq`, `comma`, `kw_state`, ...)
//! exist only for error messages and are skipped here. Expressions arrive flat (operands and
//! infix operators in a row) and get their tree from the precedence climber at the bottom of
//! this file, which also enforces the nesting limits of [`super::limits`] before it recurses.
//!
//! Called by [`super::parse`] once per declaration that pest accepted. Lowering never panics on
//! user input: its errors (a number too large, an unknown escape, nesting too deep) are returned
//! as one [`Diagnostic`] for the declaration. `expect("grammar: ...")` marks true invariants of
//! `grammar/node.pest`.

use pest::iterators::Pair;

use super::ast::{
    Arg, BinOp, Binder, Call, Decl, DeclKind, Dims, Expr, ExprKind, Ident, IndexItem, ParamInit,
    ParamTime,
};
use super::limits::{nesting_message, MAX_EXPR_DEPTH, MAX_NESTING};
use super::parser::Rule;
use crate::diag::{Diagnostic, Span};

type P<'i> = Pair<'i, Rule>;
type Lowered<T> = Result<T, Diagnostic>;

/// Lowers one declaration pair. `offset` is where pest's input starts in the file.
pub(crate) fn decl(pair: P<'_>, offset: usize) -> Lowered<Decl> {
    Lowerer {
        offset,
        brackets: 0,
    }
    .decl(pair)
}

/// Whether a rule is a token that carries no meaning beyond the grammar.
fn is_token(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::eq
            | Rule::tilde
            | Rule::comma
            | Rule::colon
            | Rule::lparen
            | Rule::rparen
            | Rule::lbrack
            | Rule::rbrack
            | Rule::over
            | Rule::dt
            | Rule::kw_model
            | Rule::kw_const
            | Rule::kw_param
            | Rule::kw_state
            | Rule::kw_input
            | Rule::kw_label
            | Rule::kw_observed
            | Rule::kw_let
            | Rule::kw_fn
            | Rule::kw_schedule
            | Rule::kw_cost
            | Rule::kw_data
            | Rule::kw_train
            | Rule::kw_metric
            | Rule::kw_output
            | Rule::kw_per
            | Rule::kw_layer
            | Rule::kw_on
            | Rule::kw_knots
            | Rule::kw_for
            | Rule::kw_in
            | Rule::kw_event
            | Rule::kw_when
            | Rule::kw_crosses
            | Rule::arrow
    )
}

/// The children of a pair that carry meaning.
fn items(pair: P<'_>) -> impl Iterator<Item = P<'_>> {
    pair.into_inner().filter(|p| !is_token(p.as_rule()))
}

/// An expression with the depth of its tree, so that depth is checked as the tree is built.
struct Node {
    expr: Expr,
    depth: u32,
}

struct Lowerer {
    offset: usize,
    /// Brackets entered so far; the pre-scan bounds it already, this is a second guard.
    brackets: usize,
}

impl Lowerer {
    fn span(&self, pair: &P<'_>) -> Span {
        let s = pair.as_span();
        Span::new(s.start() + self.offset, s.end() + self.offset)
    }

    /// The span of a rule that may end in a repetition or option (`expr`, a declaration, an
    /// argument): pest's span then includes the whitespace and comments skipped before the
    /// repetition stopped, so the end is taken from the last token instead.
    fn trimmed_span(&self, pair: &P<'_>) -> Span {
        let mut last = pair.clone();
        // `string` ends in a literal quote that is no pair: stop at it, it has no trailing space.
        while last.as_rule() != Rule::string {
            match last.clone().into_inner().next_back() {
                Some(child) => last = child,
                None => break,
            }
        }
        Span::new(
            pair.as_span().start() + self.offset,
            last.as_span().end() + self.offset,
        )
    }

    fn ident(&self, pair: P<'_>) -> Ident {
        debug_assert_eq!(pair.as_rule(), Rule::ident);
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    fn decl(&mut self, pair: P<'_>) -> Lowered<Decl> {
        let span = self.trimmed_span(&pair);
        let rule = pair.as_rule();
        let mut it = items(pair);
        // Every declaration's first meaningful child is its name, its call or `dNAME`.
        let first = it
            .next()
            .expect("grammar: a declaration has a name or a call");
        let kind = match rule {
            // model_decl = { kw_model ~ ident }
            Rule::model_decl => {
                let n = first;
                DeclKind::Model {
                    name: self.ident(n),
                }
            }
            // const_decl = { kw_const ~ ident ~ eq ~ expr }
            Rule::const_decl => {
                let (n, rest) = (first, &mut it);
                let value = rest.next().expect("grammar: const has a value");
                DeclKind::Const {
                    name: self.ident(n),
                    value: self.expr(value)?,
                }
            }
            // param_decl = { kw_param ~ ident ~ dims? ~ (per_layer | knots)?
            //                ~ (eq ~ expr | tilde ~ call)? }
            Rule::param_decl => {
                let (n, rest) = (first, &mut it);
                let name = self.ident(n);
                let (mut dims, mut time, mut init) =
                    (None, ParamTime::Constant, ParamInit::Default);
                for p in rest {
                    match p.as_rule() {
                        Rule::dims => dims = Some(self.dims(p)?),
                        // per_layer = { kw_per ~ kw_layer }
                        Rule::per_layer => time = ParamTime::PerLayer(self.span(&p)),
                        // knots = { kw_on ~ kw_knots ~ lparen ~ (expr ~ (comma ~ expr)* ~ comma?)? ~ rparen }
                        Rule::knots => {
                            let span = self.span(&p);
                            let times = items(p).map(|e| self.expr(e)).collect::<Lowered<_>>()?;
                            time = ParamTime::Knots { times, span };
                        }
                        Rule::expr => init = ParamInit::Value(self.expr(p)?),
                        Rule::call => init = ParamInit::Dist(self.call(p, false)?.0),
                        other => unreachable!("grammar: unexpected {other:?} in a param"),
                    }
                }
                DeclKind::Param {
                    name,
                    dims,
                    time,
                    init,
                }
            }
            // state_decl = { kw_state ~ ident ~ dims? ~ eq ~ expr }
            Rule::state_decl => {
                let (n, rest) = (first, &mut it);
                let name = self.ident(n);
                let (dims, init) = self.dims_then_expr(rest, "state")?;
                DeclKind::State {
                    name,
                    dims,
                    init: init.expect("grammar: state has an initial value"),
                }
            }
            // equation = { deriv_word ~ over ~ dt ~ eq ~ expr }
            // deriv_word = @{ "d" ~ (XID_START | "_") ~ XID_CONTINUE* }
            Rule::equation => {
                let (word, rest) = (first, &mut it);
                let s = self.span(&word);
                // The state is the word without its leading `d`, one byte.
                let state = Ident {
                    name: word.as_str()[1..].to_string(),
                    span: Span::new(s.start as usize + 1, s.end as usize),
                };
                let rhs = rest
                    .next()
                    .expect("grammar: equation has a right-hand side");
                DeclKind::Equation {
                    state,
                    rhs: self.expr(rhs)?,
                }
            }
            // input_decl = { kw_input ~ ident ~ dims? }
            Rule::input_decl => {
                let (n, rest) = (first, &mut it);
                let name = self.ident(n);
                let (dims, _) = self.dims_then_expr(rest, "input")?;
                DeclKind::Input { name, dims }
            }
            // label_decl = { kw_label ~ ident }
            Rule::label_decl => {
                let n = first;
                DeclKind::Label {
                    name: self.ident(n),
                }
            }
            // observed_decl = { kw_observed ~ ident ~ dims? }
            Rule::observed_decl => {
                let (n, rest) = (first, &mut it);
                let name = self.ident(n);
                let (dims, _) = self.dims_then_expr(rest, "observed")?;
                DeclKind::Observed { name, dims }
            }
            // let_decl = { kw_let ~ ident ~ eq ~ expr }
            Rule::let_decl => {
                let (n, rest) = (first, &mut it);
                let value = rest.next().expect("grammar: let has a value");
                DeclKind::Let {
                    name: self.ident(n),
                    value: self.expr(value)?,
                }
            }
            // fn_decl = { kw_fn ~ ident ~ lparen ~ (ident ~ (comma ~ ident)* ~ comma?)? ~ rparen
            //             ~ eq ~ expr }
            Rule::fn_decl => {
                let (n, rest) = (first, &mut it);
                let name = self.ident(n);
                let mut params = Vec::new();
                let mut body = None;
                for p in rest {
                    match p.as_rule() {
                        Rule::ident => params.push(self.ident(p)),
                        Rule::expr => body = Some(self.expr(p)?),
                        other => unreachable!("grammar: unexpected {other:?} in a fn"),
                    }
                }
                DeclKind::Fn {
                    name,
                    params,
                    body: body.expect("grammar: fn has a body"),
                }
            }
            // schedule_decl = { kw_schedule ~ call }
            Rule::schedule_decl => {
                let c = first;
                DeclKind::Schedule {
                    call: self.call(c, false)?.0,
                }
            }
            // cost_decl = { kw_cost ~ ident ~ eq ~ expr }
            Rule::cost_decl => {
                let (n, rest) = (first, &mut it);
                let value = rest.next().expect("grammar: cost has a value");
                DeclKind::Cost {
                    kind: self.ident(n),
                    value: self.expr(value)?,
                }
            }
            // data_decl = { kw_data ~ ident ~ eq ~ call }
            Rule::data_decl => {
                let (n, rest) = (first, &mut it);
                let source = rest.next().expect("grammar: data has a source");
                DeclKind::Data {
                    name: self.ident(n),
                    source: self.call(source, false)?.0,
                }
            }
            // train_decl = { kw_train ~ call }
            Rule::train_decl => {
                let c = first;
                DeclKind::Train {
                    optimizer: self.call(c, false)?.0,
                }
            }
            // metric_decl = { kw_metric ~ ident ~ eq ~ expr }
            Rule::metric_decl => {
                let (n, rest) = (first, &mut it);
                let value = rest.next().expect("grammar: metric has a value");
                DeclKind::Metric {
                    name: self.ident(n),
                    value: self.expr(value)?,
                }
            }
            // output_decl = { kw_output ~ ident ~ eq ~ expr }
            Rule::output_decl => {
                let (n, rest) = (first, &mut it);
                let value = rest.next().expect("grammar: output has a value");
                DeclKind::Output {
                    name: self.ident(n),
                    value: self.expr(value)?,
                }
            }
            // event_decl = { kw_event ~ ident ~ kw_when ~ expr ~ kw_crosses ~ number
            //                ~ (rising | falling)? ~ arrow ~ (kw_terminate | event_assign, ...) }
            Rule::event_decl => {
                let name = self.ident(first);
                let cond = self.expr(it.next().expect("grammar: event has a condition"))?;
                let level = it.next().expect("grammar: event has a level");
                let level_span = self.span(&level);
                let level_value: f64 = level.as_str().parse().unwrap_or(f64::NAN);
                let mut direction = super::ast::Direction::Both;
                let mut action = super::ast::EventAction::Jump(Vec::new());
                for p in it.by_ref() {
                    match p.as_rule() {
                        Rule::rising => direction = super::ast::Direction::Rising,
                        Rule::falling => direction = super::ast::Direction::Falling,
                        Rule::kw_terminate => action = super::ast::EventAction::Terminate,
                        Rule::event_assign => {
                            let span = self.span(&p);
                            let mut parts = items(p);
                            let target = self.ident(parts.next().expect("grammar: a target"));
                            let mut index = None;
                            let mut value = None;
                            for q in parts {
                                match q.as_rule() {
                                    Rule::index => {
                                        let ispan = self.span(&q);
                                        let mut idx = Vec::new();
                                        for item in items(q) {
                                            let item_span = self.span(&item);
                                            let inner: Vec<_> = item.into_inner().collect();
                                            if inner.len() != 1 || inner[0].as_rule() != Rule::expr
                                            {
                                                return Err(Diagnostic::error(
                                                    item_span,
                                                    "an event assigns a whole state or one element (`x[1] = ...`), not a slice",
                                                ));
                                            }
                                            idx.push(self.expr(inner[0].clone())?);
                                        }
                                        index = Some((idx, ispan));
                                    }
                                    Rule::expr => value = Some(self.expr(q)?),
                                    other => unreachable!("grammar: {other:?} in an assignment"),
                                }
                            }
                            if let super::ast::EventAction::Jump(list) = &mut action {
                                list.push(super::ast::Assign {
                                    target,
                                    index,
                                    value: value.expect("grammar: an assignment has a value"),
                                    span,
                                });
                            }
                        }
                        other => unreachable!("grammar: {other:?} in an event"),
                    }
                }
                DeclKind::Event {
                    name,
                    cond,
                    level: (level_value, level_span),
                    direction,
                    action,
                }
            }
            other => unreachable!("grammar: {other:?} is not a declaration"),
        };
        Ok(Decl { kind, span })
    }

    /// The optional `dims` and the optional expression after it, for `state`, `input`, `observed`.
    fn dims_then_expr<'i>(
        &mut self,
        rest: impl Iterator<Item = P<'i>>,
        what: &str,
    ) -> Lowered<(Option<Dims>, Option<Expr>)> {
        let (mut dims, mut value) = (None, None);
        for p in rest {
            match p.as_rule() {
                Rule::dims => dims = Some(self.dims(p)?),
                Rule::expr => value = Some(self.expr(p)?),
                other => unreachable!("grammar: unexpected {other:?} in {what}"),
            }
        }
        Ok((dims, value))
    }

    // dims = { lbrack ~ expr ~ (comma ~ expr)* ~ rbrack }
    fn dims(&mut self, pair: P<'_>) -> Lowered<Dims> {
        let span = self.span(&pair);
        let dims: Vec<Expr> = items(pair).map(|e| self.expr(e)).collect::<Lowered<_>>()?;
        if let Some(third) = dims.get(2) {
            return Err(Diagnostic::error(
                third.span,
                format!("a shape has one or two dimensions, found {}", dims.len()),
            ));
        }
        Ok(Dims { dims, span })
    }

    // binder = { ident ~ kw_in ~ expr }: the expression must be a range `a..b`.
    fn binder(&mut self, pair: P<'_>) -> Lowered<(Binder, u32)> {
        let span = self.trimmed_span(&pair);
        let mut it = items(pair);
        let var = self.ident(it.next().expect("grammar: a binder has a name"));
        let range = self.expr_node(it.next().expect("grammar: a binder has a range"))?;
        let ExprKind::Range { start, end } = range.expr.kind else {
            return Err(Diagnostic::error(
                range.expr.span,
                format!("expected a range such as `0..N` after `{} in`", var.name),
            )
            .with_help(
                "the index runs over the integers from the first bound to one before the second",
            ));
        };
        Ok((
            Binder {
                var,
                start,
                end,
                span,
            },
            range.depth,
        ))
    }

    // call = { ident ~ lparen ~ (arg ~ (comma ~ arg)* ~ comma?)? ~ rparen }
    // arg  = { binder | (ident ~ eq)? ~ expr }
    /// A call; with `index_form`, `sum(i in a..b, body)` returns its binder beside a call whose
    /// one argument is the body. A binder anywhere else is an error.
    fn call(&mut self, pair: P<'_>, index_form: bool) -> Lowered<(Call, Option<Binder>, u32)> {
        let span = self.span(&pair);
        let mut it = items(pair);
        let name = self.ident(it.next().expect("grammar: a call has a name"));
        self.enter(name.span)?;
        let mut args = Vec::new();
        let mut depth = 0;
        let mut binder: Option<Binder> = None;
        for (position, arg) in it.enumerate() {
            let arg_span = self.trimmed_span(&arg);
            let mut parts = items(arg);
            let first = parts.next().expect("grammar: an argument has a value");
            if first.as_rule() == Rule::binder {
                let (b, d) = self.binder(first)?;
                if !(index_form && name.name == "sum" && position == 0) {
                    return Err(Diagnostic::error(
                        b.span,
                        format!(
                            "`{} in ...` can only be the first argument of `sum`",
                            b.var.name
                        ),
                    )
                    .with_help("write `sum(i in 0..N, EXPR)` or `[EXPR for i in 0..N]`"));
                }
                depth = depth.max(d);
                binder = Some(b);
                continue;
            }
            let (name, value) = if first.as_rule() == Rule::ident {
                let value = parts.next().expect("grammar: a named argument has a value");
                (Some(self.ident(first)), value)
            } else {
                (None, first)
            };
            let value = self.expr_node(value)?;
            depth = depth.max(value.depth);
            args.push(Arg {
                name,
                value: value.expr,
                span: arg_span,
            });
        }
        self.brackets -= 1;
        if let Some(b) = &binder {
            if args.len() != 1 || args[0].name.is_some() {
                return Err(Diagnostic::error(
                    span,
                    format!(
                        "`sum({} in ...)` takes the index and one expression to sum",
                        b.var.name
                    ),
                )
                .with_help("write `sum(i in 0..N, EXPR)`"));
            }
        }
        Ok((Call { name, args, span }, binder, depth + 1))
    }

    /// Enters a bracket: the second guard behind the pre-scan.
    fn enter(&mut self, at: Span) -> Lowered<()> {
        self.brackets += 1;
        if self.brackets > MAX_NESTING {
            return Err(Diagnostic::error(at, nesting_message()));
        }
        Ok(())
    }

    fn expr(&mut self, pair: P<'_>) -> Lowered<Expr> {
        Ok(self.expr_node(pair)?.expr)
    }

    // expr = { operand ~ (infix ~ operand)* }
    fn expr_node(&mut self, pair: P<'_>) -> Lowered<Node> {
        debug_assert_eq!(pair.as_rule(), Rule::expr);
        let mut operands = Vec::new();
        let mut ops = Vec::new();
        let mut pow_run = 0;
        for p in pair.into_inner() {
            if p.as_rule() == Rule::operand {
                operands.push(Some(self.operand(p)?));
                continue;
            }
            let op = Op::of(p.as_rule());
            let span = self.span(&p);
            // A run of `^` nests to the right: the climber recurses once per `^`.
            pow_run = if op == Op::Bin(BinOp::Pow) {
                pow_run + 1
            } else {
                0
            };
            if pow_run > MAX_NESTING {
                return Err(Diagnostic::error(span, nesting_message()));
            }
            ops.push((op, span));
        }
        Climber {
            operands,
            ops,
            next_operand: 0,
            next_op: 0,
        }
        .binary(0)
    }

    // operand = { prefix* ~ primary ~ postfix* }
    // prefix  = _{ neg | plus }
    // postfix = _{ index | transpose }
    fn operand(&mut self, pair: P<'_>) -> Lowered<Operand> {
        let mut prefixes = Vec::new();
        let mut core: Option<Node> = None;
        let mut postfixes = 0;
        for p in pair.into_inner() {
            let span = self.span(&p);
            match (p.as_rule(), core.take()) {
                (Rule::neg | Rule::plus, None) => {
                    if prefixes.len() == MAX_NESTING {
                        return Err(Diagnostic::error(span, nesting_message()));
                    }
                    prefixes.push((p.as_rule() == Rule::neg, span));
                }
                (Rule::index | Rule::transpose, Some(base)) => {
                    postfixes += 1;
                    if postfixes > MAX_NESTING {
                        return Err(Diagnostic::error(span, nesting_message()));
                    }
                    core = Some(self.postfix(base, p)?);
                }
                (_, None) => core = Some(self.primary(p)?),
                (other, Some(_)) => unreachable!("grammar: {other:?} after an operand's primary"),
            }
        }
        Ok(Operand {
            prefixes,
            core: core.expect("grammar: an operand has a primary"),
        })
    }

    // index      = { lbrack ~ index_item ~ (comma ~ index_item)* ~ rbrack }
    // index_item = { colon ~ expr? | expr ~ (colon ~ expr?)? }
    // transpose  = { "'" }
    fn postfix(&mut self, base: Node, pair: P<'_>) -> Lowered<Node> {
        let span = base.expr.span.to(self.span(&pair));
        let at = self.span(&pair);
        if pair.as_rule() == Rule::transpose {
            return node(
                ExprKind::Transpose(Box::new(base.expr)),
                span,
                base.depth + 1,
                at,
            );
        }
        self.enter(at)?;
        let mut depth = base.depth;
        let mut items_out = Vec::new();
        for item in items(pair) {
            let item_span = self.trimmed_span(&item);
            let mut start = None;
            let mut end = None;
            let mut slice = false;
            for p in item.into_inner() {
                if p.as_rule() == Rule::colon {
                    slice = true;
                    continue;
                }
                let e = self.expr_node(p)?;
                depth = depth.max(e.depth);
                if slice {
                    end = Some(e.expr);
                } else {
                    start = Some(e.expr);
                }
            }
            items_out.push(if slice {
                IndexItem::Slice {
                    start,
                    end,
                    span: item_span,
                }
            } else {
                IndexItem::Single(start.expect("grammar: an index item has an expression"))
            });
        }
        self.brackets -= 1;
        let kind = ExprKind::Index {
            base: Box::new(base.expr),
            items: items_out,
        };
        node(kind, span, depth + 1, at)
    }

    // primary = _{ number | string | call | ident | paren | list }
    fn primary(&mut self, pair: P<'_>) -> Lowered<Node> {
        let span = self.span(&pair);
        let leaf = |kind| {
            Ok(Node {
                expr: Expr { kind, span },
                depth: 1,
            })
        };
        match pair.as_rule() {
            Rule::number => {
                let value: f64 = pair
                    .as_str()
                    .parse()
                    .expect("grammar: a number literal is a valid f64");
                if value.is_infinite() {
                    return Err(Diagnostic::error(span, "number is too large")
                        .with_help(format!("the largest number is about {:e}", f64::MAX)));
                }
                leaf(ExprKind::Number(value))
            }
            // string = ${ "\"" ~ string_body ~ "\"" }
            Rule::string => {
                let body = pair
                    .into_inner()
                    .next()
                    .expect("grammar: a string has a body");
                let body_start = self.span(&body).start as usize;
                leaf(ExprKind::Str(unescape(body.as_str(), body_start)?))
            }
            Rule::ident => leaf(ExprKind::Name(pair.as_str().to_string())),
            Rule::call => {
                let (call, binder, depth) = self.call(pair, true)?;
                match binder {
                    // sum(i in a..b, body): `call` has checked that one body follows.
                    Some(binder) => {
                        let body = call.args.into_iter().next().expect("checked by call");
                        let kind = ExprKind::IndexSum {
                            binder,
                            body: Box::new(body.value),
                        };
                        node(kind, span, depth, span)
                    }
                    None => node(ExprKind::Call(call), span, depth, span),
                }
            }
            // paren = { lparen ~ expr ~ rparen }: no node of its own, but the span covers the
            // parentheses so that `(a + b) * c` spans from `(`.
            Rule::paren => {
                self.enter(span)?;
                let inner = items(pair)
                    .next()
                    .expect("grammar: parentheses hold an expression");
                let mut inner = self.expr_node(inner)?;
                self.brackets -= 1;
                inner.expr.span = span;
                Ok(inner)
            }
            // list       = { lbrack ~ (expr ~ (for_clause | (comma ~ expr)* ~ comma?))? ~ rbrack }
            // for_clause = { kw_for ~ binder }
            Rule::list => {
                self.enter(span)?;
                let mut depth = 0;
                let mut list = Vec::new();
                let mut binder = None;
                for e in items(pair) {
                    if e.as_rule() == Rule::for_clause {
                        let b = items(e).next().expect("grammar: `for` has a binder");
                        let (b, d) = self.binder(b)?;
                        depth = depth.max(d);
                        binder = Some(b);
                        continue;
                    }
                    let e = self.expr_node(e)?;
                    depth = depth.max(e.depth);
                    list.push(e.expr);
                }
                self.brackets -= 1;
                let kind = match binder {
                    Some(binder) => ExprKind::Comprehension {
                        binder,
                        body: Box::new(list.pop().expect("grammar: a comprehension has a body")),
                    },
                    None => ExprKind::List(list),
                };
                node(kind, span, depth + 1, span)
            }
            other => unreachable!("grammar: {other:?} is not a primary"),
        }
    }
}

/// Resolves `\"`, `\\`, `\n` and `\t`; `start` is the body's offset in the file.
fn unescape(body: &str, start: usize) -> Lowered<String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some((_, '"')) => out.push('"'),
            Some((_, '\\')) => out.push('\\'),
            Some((_, 'n')) => out.push('\n'),
            Some((_, 't')) => out.push('\t'),
            Some((j, other)) => {
                let span = Span::new(start + i, start + j + other.len_utf8());
                return Err(Diagnostic::error(
                    span,
                    format!("unknown escape `\\{other}` in a string"),
                )
                .with_help(r#"write `\"` for a quote and `\\` for a backslash"#));
            }
            None => unreachable!("grammar: a backslash in a string is followed by a character"),
        }
    }
    Ok(out)
}

/// A node of the given depth, or the error for a tree deeper than [`MAX_EXPR_DEPTH`] at `at`.
fn node(kind: ExprKind, span: Span, depth: u32, at: Span) -> Lowered<Node> {
    if depth > MAX_EXPR_DEPTH {
        return Err(Diagnostic::error(
            at,
            format!("expression nested too deeply (more than {MAX_EXPR_DEPTH} levels)"),
        )
        .with_help("split it into `let` declarations"));
    }
    Ok(Node {
        expr: Expr { kind, span },
        depth,
    })
}

/// An operand before precedence is applied: prefix operators (`true` for `-`), then the primary
/// with its postfix operators already applied.
struct Operand {
    prefixes: Vec<(bool, Span)>,
    core: Node,
}

/// An infix operator: a binary operator or the range `..`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Bin(BinOp),
    Range,
}

impl Op {
    // infix = _{ range | le | ge | eq_op | ne | lt | gt | add | sub | elem_mul | mul | div | pow }
    fn of(rule: Rule) -> Op {
        Op::Bin(match rule {
            Rule::range => return Op::Range,
            Rule::le => BinOp::Le,
            Rule::ge => BinOp::Ge,
            Rule::eq_op => BinOp::Eq,
            Rule::ne => BinOp::Ne,
            Rule::lt => BinOp::Lt,
            Rule::gt => BinOp::Gt,
            Rule::add => BinOp::Add,
            Rule::sub => BinOp::Sub,
            Rule::elem_mul => BinOp::ElemMul,
            Rule::mul => BinOp::Mul,
            Rule::div => BinOp::Div,
            Rule::pow => BinOp::Pow,
            other => unreachable!("grammar: {other:?} is not an infix operator"),
        })
    }

    /// Left and right binding powers; a right power one above the left makes an operator
    /// left-associative. `^` and the prefix operators are handled in [`Climber::unary`].
    fn binding(self) -> (u8, u8) {
        match self {
            Op::Range => (1, 2),
            Op::Bin(BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne) => {
                (3, 4)
            }
            Op::Bin(BinOp::Add | BinOp::Sub) => (5, 6),
            Op::Bin(BinOp::Mul | BinOp::Div | BinOp::ElemMul) => (7, 8),
            Op::Bin(BinOp::Pow) => (9, 9),
        }
    }
}

/// Precedence climbing over one flat `expr`: operands `[o0, o1, ...]` and operators
/// `[op0, op1, ...]`, where `op_i` sits between `o_i` and `o_(i+1)`.
struct Climber {
    operands: Vec<Option<Operand>>,
    ops: Vec<(Op, Span)>,
    next_operand: usize,
    next_op: usize,
}

impl Climber {
    /// Operators binding at least `min_bp`, left to right. Recursion depth is bounded by the
    /// number of precedence levels; equal-level operators loop instead.
    fn binary(&mut self, min_bp: u8) -> Lowered<Node> {
        let mut lhs = self.unary()?;
        while let Some(&(op, at)) = self.ops.get(self.next_op) {
            let (left_bp, right_bp) = op.binding();
            if left_bp < min_bp {
                break;
            }
            self.next_op += 1;
            let rhs = self.binary(right_bp)?;
            let span = lhs.expr.span.to(rhs.expr.span);
            let depth = lhs.depth.max(rhs.depth) + 1;
            let (lhs_box, rhs_box) = (Box::new(lhs.expr), Box::new(rhs.expr));
            let kind = match op {
                Op::Bin(op) => ExprKind::Binary {
                    op,
                    lhs: lhs_box,
                    rhs: rhs_box,
                },
                Op::Range => ExprKind::Range {
                    start: lhs_box,
                    end: rhs_box,
                },
            };
            lhs = node(kind, span, depth, at)?;
            // `..` is non-associative: `a..b..c` means nothing.
            if let (Op::Range, Some(&(Op::Range, next))) = (op, self.ops.get(self.next_op)) {
                return Err(Diagnostic::error(next, "unexpected `..` after a range")
                    .with_help("a range `a..b` cannot be a bound of another range"));
            }
        }
        Ok(lhs)
    }

    /// One operand with its prefix operators and any `^` chain after it. `^` binds tighter than
    /// a prefix `-` on its left (`-x^2` is `-(x^2)`) and takes a prefixed operand on its right
    /// (`2^-1`); it is right-associative, so the right side recurses (at most
    /// [`MAX_NESTING`] times in a row, checked in `expr_node`).
    fn unary(&mut self) -> Lowered<Node> {
        let Operand { prefixes, core } = self.operands[self.next_operand]
            .take()
            .expect("grammar: an operand follows every infix operator");
        self.next_operand += 1;
        let mut base = core;
        if let Some(&(Op::Bin(BinOp::Pow), at)) = self.ops.get(self.next_op) {
            self.next_op += 1;
            let exponent = self.unary()?;
            let span = base.expr.span.to(exponent.expr.span);
            let depth = base.depth.max(exponent.depth) + 1;
            let kind = ExprKind::Binary {
                op: BinOp::Pow,
                lhs: Box::new(base.expr),
                rhs: Box::new(exponent.expr),
            };
            base = node(kind, span, depth, at)?;
        }
        for (negate, at) in prefixes.into_iter().rev() {
            let span = at.to(base.expr.span);
            base = if negate {
                node(ExprKind::Neg(Box::new(base.expr)), span, base.depth + 1, at)?
            } else {
                // Unary plus is the operand itself; the span keeps the `+`.
                Node {
                    expr: Expr {
                        kind: base.expr.kind,
                        span,
                    },
                    depth: base.depth,
                }
            };
        }
        Ok(base)
    }
}

//! The abstract syntax tree of a `.node` file: a plain value tree with a [`Span`] on every node.
//!
//! The AST knows nothing of shapes, names or solvers; `sema` gives it meaning. Declarations keep
//! source order, which is also the order of every report that lists them.

use crate::diag::Span;

/// A whole `.node` file: its declarations in source order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    /// Declarations in source order.
    pub decls: Vec<Decl>,
    /// Declarations that failed to parse (already reported), with the name they would have
    /// declared, so that `sema` can stay quiet about that name instead of cascading errors.
    pub broken: Vec<BrokenDecl>,
}

/// What is known of a declaration that failed to parse.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokenDecl {
    /// The declaration keyword (`state`, `param`, ...), or `equation` for `dNAME/dt`.
    pub keyword: String,
    /// The name it declares (for `equation`: the state's name), if one could be read.
    pub name: Option<Ident>,
    /// Where the broken declaration starts.
    pub span: Span,
    /// Every name written in the broken text: a name whose only use is here is not reported
    /// as never used (the parse error already points at that line).
    pub mentions: Vec<String>,
}

/// A name as written, with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where it is written.
    pub span: Span,
}

/// One top-level declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct Decl {
    /// What is declared.
    pub kind: DeclKind,
    /// The whole declaration, keyword to last token.
    pub span: Span,
}

/// The declaration forms of the language, in the spec's order.
#[derive(Clone, Debug, PartialEq)]
pub enum DeclKind {
    /// `model NAME`
    Model {
        /// The model's name.
        name: Ident,
    },
    /// `const NAME = EXPR`
    Const {
        /// The constant's name.
        name: Ident,
        /// Its value, a compile-time expression.
        value: Expr,
    },
    /// `param NAME[DIMS] (per layer | on knots(T0, ...))? (= EXPR | ~ DIST)?`
    Param {
        /// The parameter's name.
        name: Ident,
        /// `[n]` or `[m, n]`; absent for a scalar.
        dims: Option<Dims>,
        /// Constant, per layer, or on knots.
        time: ParamTime,
        /// Initial value or distribution.
        init: ParamInit,
    },
    /// `state NAME[DIMS] = EXPR`
    State {
        /// The state's name.
        name: Ident,
        /// `[n]` or `[m, n]`; absent for a scalar.
        dims: Option<Dims>,
        /// The initial value.
        init: Expr,
    },
    /// `dNAME/dt = EXPR`
    Equation {
        /// The state the equation is for; the span covers only `NAME`.
        state: Ident,
        /// The right-hand side.
        rhs: Expr,
    },
    /// `input NAME[DIMS]`
    Input {
        /// The input's name.
        name: Ident,
        /// `[n]` or `[m, n]`; absent for a scalar.
        dims: Option<Dims>,
    },
    /// `label NAME`
    Label {
        /// The label's name.
        name: Ident,
    },
    /// `observed NAME[DIMS]`
    Observed {
        /// The observed quantity's name.
        name: Ident,
        /// `[n]` or `[m, n]`; absent for a scalar.
        dims: Option<Dims>,
    },
    /// `let NAME = EXPR`
    Let {
        /// The name.
        name: Ident,
        /// The expression it stands for.
        value: Expr,
    },
    /// `fn NAME(ARGS) = EXPR`
    Fn {
        /// The function's name.
        name: Ident,
        /// Parameter names.
        params: Vec<Ident>,
        /// The body.
        body: Expr,
    },
    /// `schedule METHOD(ARGS)`
    Schedule {
        /// The method and its arguments.
        call: Call,
    },
    /// `cost KIND = EXPR`; the kind is checked by sema so that a typo gets a suggestion.
    Cost {
        /// `terminal`, `running`, `penalty` or `observed`.
        kind: Ident,
        /// The cost expression.
        value: Expr,
    },
    /// `data NAME = SOURCE(ARGS)`
    Data {
        /// The data block's name (`train`, `test`, ...).
        name: Ident,
        /// The source and its arguments.
        source: Call,
    },
    /// `train OPTIMIZER(ARGS)`
    Train {
        /// The optimizer and its arguments.
        optimizer: Call,
    },
    /// `metric NAME = EXPR`
    Metric {
        /// The metric's name.
        name: Ident,
        /// Its value at the final time.
        value: Expr,
    },
    /// `output NAME = EXPR`
    Output {
        /// The output's name.
        name: Ident,
        /// Its value at each saved time.
        value: Expr,
    },
    /// `event NAME when EXPR crosses 0 [rising | falling] -> ACTION`
    Event {
        /// The event's name.
        name: Ident,
        /// The condition whose zero crossing is the event.
        cond: Expr,
        /// The level after `crosses` as written (sema requires 0), with its span.
        level: (f64, Span),
        /// Which crossings count.
        direction: Direction,
        /// What happens at the event.
        action: EventAction,
    },
}

/// Which zero crossings of an event's condition count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Both directions (nothing written).
    Both,
    /// `rising`: from negative to positive.
    Rising,
    /// `falling`: from positive to negative.
    Falling,
}

/// What an event does.
#[derive(Clone, Debug, PartialEq)]
pub enum EventAction {
    /// `-> terminate`: the sample stops.
    Terminate,
    /// `-> STATE = EXPR, ...`: the state jumps (all right-hand sides read the state before it).
    Jump(Vec<Assign>),
}

/// `STATE = EXPR` or `STATE[I] = EXPR` in an event.
#[derive(Clone, Debug, PartialEq)]
pub struct Assign {
    /// The state assigned.
    pub target: Ident,
    /// Constant indices of one element, with the span of `[...]`.
    pub index: Option<(Vec<Expr>, Span)>,
    /// The new value.
    pub value: Expr,
    /// The whole assignment.
    pub span: Span,
}

/// `[n]` or `[m, n]`: dimension expressions, evaluated as constants by sema.
#[derive(Clone, Debug, PartialEq)]
pub struct Dims {
    /// One or two dimension expressions.
    pub dims: Vec<Expr>,
    /// From `[` to `]`.
    pub span: Span,
}

/// How a parameter varies in time.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamTime {
    /// One value for all time.
    Constant,
    /// `per layer`: one copy per layer of the schedule.
    PerLayer(Span),
    /// `on knots(T0, T1, ...)`: one copy per knot, linearly interpolated.
    Knots {
        /// The knot times.
        times: Vec<Expr>,
        /// From `on` to `)`.
        span: Span,
    },
}

/// How a parameter is initialised.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamInit {
    /// Nothing written: zeros.
    Default,
    /// `= EXPR`
    Value(Expr),
    /// `~ DIST(ARGS)`, e.g. `~ normal(0, 0.5)`.
    Dist(Call),
}

/// `NAME(ARGS)`: a function call, a schedule, a data source or an optimizer.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The callee.
    pub name: Ident,
    /// Positional and named arguments in source order.
    pub args: Vec<Arg>,
    /// From the name to `)`.
    pub span: Span,
}

/// One call argument, positional (`name` is `None`) or named (`name = value`).
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// The argument's name if given as `name = value`.
    pub name: Option<Ident>,
    /// The value: any expression, including strings and `a..b` ranges.
    pub value: Expr,
    /// The whole argument.
    pub span: Span,
}

/// An expression with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What kind of expression.
    pub kind: ExprKind,
    /// The whole expression.
    pub span: Span,
}

/// Expression forms.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// `2`, `2.5`, `1e-3`
    Number(f64),
    /// `"path.csv"`, with escapes resolved.
    Str(String),
    /// A bare name: a const, param, state, input, label, let, fn parameter, `t` or `pi`.
    Name(String),
    /// `lhs op rhs`
    Binary {
        /// The operator.
        op: BinOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `-operand`
    Neg(Box<Expr>),
    /// `name(args)`
    Call(Call),
    /// `base[i]`, `base[i, j]`, `base[a:b]`
    Index {
        /// The indexed expression.
        base: Box<Expr>,
        /// One item per dimension.
        items: Vec<IndexItem>,
    },
    /// `base'`
    Transpose(Box<Expr>),
    /// `[a, b, c]`; a list whose items are all lists is a matrix of rows.
    List(Vec<Expr>),
    /// `sum(i in a..b, body)`: the sum of `body` over the integers `a ≤ i < b`.
    IndexSum {
        /// The index and its range.
        binder: Binder,
        /// A number for each `i`.
        body: Box<Expr>,
    },
    /// `[body for i in a..b]`: the vector of `body` for `i = a, …, b − 1`.
    Comprehension {
        /// The index and its range.
        binder: Binder,
        /// A number for each `i`.
        body: Box<Expr>,
    },
    /// `start..end` (end exclusive), used for column ranges.
    Range {
        /// First index.
        start: Box<Expr>,
        /// One past the last index.
        end: Box<Expr>,
    },
}

/// `i in a..b` of an index form (end exclusive, like slices).
#[derive(Clone, Debug, PartialEq)]
pub struct Binder {
    /// The index's name.
    pub var: Ident,
    /// First value of the index.
    pub start: Box<Expr>,
    /// One past the last value.
    pub end: Box<Expr>,
    /// From the name to the end of the range.
    pub span: Span,
}

/// One position in an index expression.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexItem {
    /// A single index `i`.
    Single(Expr),
    /// `a:b`, `a:`, `:b` or `:` (end exclusive).
    Slice {
        /// First index; 0 when absent.
        start: Option<Expr>,
        /// One past the last index; the dimension when absent.
        end: Option<Expr>,
        /// The whole slice.
        span: Span,
    },
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`: scalar × anything, matrix × vector, matrix × matrix.
    Mul,
    /// `/`
    Div,
    /// `.*`: elementwise product.
    ElemMul,
    /// `^`: right-associative, binds tighter than unary minus.
    Pow,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::ElemMul => ".*",
            BinOp::Pow => "^",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
        }
    }
}

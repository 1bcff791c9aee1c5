//! The two forms of `fhe_model!` input.
//!
//! - `fhe_model!(pub BreastCancer = "specs/breast_cancer_logreg.yaml");`
//!   optionally followed by `, p_fail = -40`;
//! - `fhe_model! { pub model Iris { … } }`, the DSL inline.

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use syn::parse::{Parse, ParseStream};
use syn::{Ident, LitFloat, LitInt, LitStr, Token, Visibility};

/// Parsed macro input.
pub enum MacroInput {
    /// A spec file, relative to the calling crate's manifest directory.
    File {
        vis: Visibility,
        name: Ident,
        path: LitStr,
        p_fail: Option<f64>,
    },
    /// An inline DSL model.
    Dsl {
        vis: Visibility,
        name: Ident,
        /// The tokens of `model Name { … }`.
        tokens: TokenStream,
    },
}

impl MacroInput {
    /// The generated type's name.
    pub fn name(&self) -> &Ident {
        match self {
            Self::File { name, .. } | Self::Dsl { name, .. } => name,
        }
    }

    /// The generated type's visibility.
    pub fn vis(&self) -> &Visibility {
        match self {
            Self::File { vis, .. } | Self::Dsl { vis, .. } => vis,
        }
    }
}

impl Parse for MacroInput {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let vis: Visibility = input.parse()?;
        if input.peek(Ident) && input.fork().parse::<Ident>()? == "model" {
            let tokens: TokenStream = input.parse()?;
            let mut iter = tokens.clone().into_iter();
            iter.next();
            let name = match iter.next() {
                Some(TokenTree::Ident(name)) => name,
                other => {
                    let span = other.map_or_else(Span::call_site, |t| t.span());
                    return Err(syn::Error::new(
                        span,
                        "expected the model's name after `model`",
                    ));
                }
            };
            match iter.next() {
                Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {}
                other => {
                    let span = other.map_or_else(|| name.span(), |t| t.span());
                    return Err(syn::Error::new(span, "expected `{` after the model's name"));
                }
            }
            if let Some(extra) = iter.next() {
                return Err(syn::Error::new(
                    extra.span(),
                    "unexpected tokens after the model",
                ));
            }
            return Ok(Self::Dsl { vis, name, tokens });
        }
        let name: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        let path: LitStr = input.parse()?;
        let mut p_fail = None;
        while input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            if key != "p_fail" {
                return Err(syn::Error::new(
                    key.span(),
                    "unknown option; expected `p_fail`",
                ));
            }
            let negative = input.parse::<Option<Token![-]>>()?.is_some();
            let value = if input.peek(LitFloat) {
                input.parse::<LitFloat>()?.base10_parse::<f64>()?
            } else {
                input.parse::<LitInt>()?.base10_parse::<f64>()?
            };
            p_fail = Some(if negative { -value } else { value });
        }
        Ok(Self::File {
            vis,
            name,
            path,
            p_fail,
        })
    }
}

/// DSL text rebuilt from tokens, with the span of every token's bytes, so
/// that a position in the text maps back to the token the user wrote.
pub struct DslText {
    /// The text pest parses.
    pub text: String,
    spans: Vec<(usize, usize, Span)>,
}

impl DslText {
    /// Writes the tokens out with single spaces between them (none after a
    /// `-`, so that negative numbers stay one token).
    pub fn new(tokens: TokenStream) -> Self {
        let mut this = Self {
            text: String::new(),
            spans: Vec::new(),
        };
        this.write(tokens);
        this
    }

    fn push(&mut self, piece: &str, span: Span) {
        if !self.text.is_empty() && !self.text.ends_with(['-', '\n']) {
            self.text.push(' ');
        }
        let start = self.text.len();
        self.text.push_str(piece);
        self.spans.push((start, self.text.len(), span));
    }

    fn write(&mut self, tokens: TokenStream) {
        for tt in tokens {
            match tt {
                TokenTree::Group(g) => {
                    let (open, close) = match g.delimiter() {
                        Delimiter::Brace => ("{", "}"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::None => ("", ""),
                    };
                    self.push(open, g.span_open());
                    self.write(g.stream());
                    self.push(close, g.span_close());
                }
                TokenTree::Ident(i) => self.push(&i.to_string(), i.span()),
                TokenTree::Punct(p) => self.push(&p.as_char().to_string(), p.span()),
                TokenTree::Literal(l) => self.push(&l.to_string(), l.span()),
            }
        }
    }

    /// The span of the token at a 1-based line and column of the text.
    pub fn span_at(&self, line: usize, column: usize) -> Option<Span> {
        let line_start: usize = self
            .text
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(str::len)
            .sum();
        let rest = self.text.get(line_start..)?;
        let offset = line_start
            + rest
                .char_indices()
                .nth(column.saturating_sub(1))
                .map_or(rest.len(), |(i, _)| i);
        self.spans
            .iter()
            .find(|(start, end, _)| *start <= offset && offset < (*end).max(start + 1))
            .or_else(|| {
                self.spans
                    .iter()
                    .rev()
                    .find(|(start, _, _)| *start <= offset)
            })
            .map(|(_, _, span)| *span)
    }
}

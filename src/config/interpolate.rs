//! `${VAR}` and `${VAR:-default}` in the config text, before it is parsed.
//!
//! Interpolation works on the text, so a variable can hold a number or a
//! duration as well as a string. A value may not contain a newline: that
//! would let an environment variable rewrite the structure of the file.

/// Replaces every `${NAME}` / `${NAME:-default}`; `$$` is a literal `$`.
/// Errors name the line and the variable.
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let line = text[..text.len() - tail.len()].matches('\n').count() + 1;
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let end = body.find('}').ok_or_else(|| format!("line {line}: `${{` without a closing `}}`"))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("line {line}: `${{{expr}}}`: expected a variable name of letters, digits and _"));
            }
            let value = match (lookup(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => value,
                (None, Some(default)) => default.to_string(),
                (None, None) => {
                    return Err(format!(
                        "line {line}: environment variable {name} is not set (use ${{{name}:-default}} for a default)"
                    ));
                }
            };
            if value.contains('\n') {
                return Err(format!("line {line}: environment variable {name} contains a newline"));
            }
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("kafka:9092".into()),
            "EMPTY" => Some(String::new()),
            "NL" => Some("a\nb".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_and_defaults() {
        assert_eq!(interpolate("a: ${HOST}", env).unwrap(), "a: kafka:9092");
        assert_eq!(interpolate("a: ${NOPE:-x:1}", env).unwrap(), "a: x:1");
        assert_eq!(interpolate("a: ${EMPTY:-d}", env).unwrap(), "a: d", "empty counts as unset, like the shell's :-");
        assert_eq!(interpolate("cost: $$5 and $x", env).unwrap(), "cost: $5 and $x");
    }

    #[test]
    fn errors_name_line_and_variable() {
        let err = interpolate("a: 1\nb: ${MISSING}", env).unwrap_err();
        assert!(err.contains("line 2") && err.contains("MISSING"), "{err}");
        assert!(interpolate("a: ${NL}", env).unwrap_err().contains("newline"));
        assert!(interpolate("a: ${bad name}", env).unwrap_err().contains("variable name"));
        assert!(interpolate("a: ${OPEN", env).unwrap_err().contains("closing"));
    }
}

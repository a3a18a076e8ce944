//! Tables for the admin commands' output: one row per item, one column per field.

use serde_json::Value;

/// One cell: `-` for null, strings as they are, lists joined with `; ` (an item by its
/// subject or name), a certificate as its subject and expiry.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Object(o) => o
                    .get("subject")
                    .or_else(|| o.get("name"))
                    .map(cell)
                    .unwrap_or_else(|| i.to_string()),
                other => cell(other),
            })
            .collect::<Vec<_>>()
            .join("; "),
        Value::Object(o) => o
            .get("subject")
            .map(|s| {
                format!(
                    "{} (until {})",
                    cell(s),
                    o.get("not_after").map(cell).unwrap_or_default()
                )
            })
            .unwrap_or_else(|| v.to_string()),
        other => other.to_string(),
    }
}

/// Prints rows (an array, or one object) with these columns; cells wider than 60 characters
/// are cut.
pub fn print(v: &Value, cols: &[&str]) {
    let rows: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if cols.iter().all(|c| o.get(*c).is_some_and(Value::is_array)) => {
            // An import report: one row per column value.
            for c in cols {
                let items = o.get(*c).map(cell).unwrap_or_default();
                outln!("{c}: {}", if items.is_empty() { "-".into() } else { items });
            }
            return;
        }
        other => vec![other],
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
                .min(60)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| {
                let c: String = c.chars().take(*w).collect();
                format!("{c:<w$}")
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    outln!("{}", line(cols.iter().map(|c| c.to_uppercase()).collect()));
    for r in table {
        outln!("{}", line(r));
    }
}

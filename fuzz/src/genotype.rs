//! Genotypes as users write them: the JSON form and the one-line text form.

use nasnet_searchspace::Genotype;

/// JSON (also through `from_json_or_text`, as `--arch` reads it); a parsed genotype must
/// survive both printed forms unchanged. Accepted: the input is a valid genotype.
pub fn json(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    if let Ok(g) = Genotype::from_json(text) {
        assert_round_trips(&g);
    }
    Genotype::from_json_or_text(text)
        .inspect(assert_round_trips)
        .is_ok()
}

/// The one-line text form (`normal: ... ; reduction: ...`); same round-trip checks.
/// Accepted: the input is a valid genotype.
pub fn text(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let _ = nasnet_searchspace::text::parse_cell(text, nasnet_searchspace::CellRole::Normal);
    Genotype::from_text(text)
        .inspect(assert_round_trips)
        .is_ok()
}

fn assert_round_trips(g: &Genotype) {
    let json = g.to_json_pretty();
    assert_eq!(&Genotype::from_json(&json).expect("own JSON parses"), g);
    let line = g.to_string();
    assert_eq!(
        &Genotype::from_text(&line).expect("own text form parses"),
        g
    );
    let _ = nasnet_searchspace::text::describe(g);
}

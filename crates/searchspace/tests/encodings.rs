//! JSON and compact-text forms: exact round trips, and typed errors naming what is wrong.

use nasnet_searchspace::named;
use nasnet_searchspace::text::{describe, parse_cell};
use nasnet_searchspace::{CellRole, Genotype, GenotypeError, SearchSpace};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn many_genotypes() -> Vec<Genotype> {
    let mut out: Vec<Genotype> = named::NAMED.iter().map(|a| (a.build)()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for space in [
        SearchSpace::nasnet(),
        SearchSpace::nasnet_b(),
        SearchSpace::nasnet_c(),
    ] {
        for _ in 0..300 {
            out.push(space.sample(&mut rng));
        }
    }
    out
}

#[test]
fn nasnet_a_text_form_is_exact() {
    let text = named::nasnet_a().to_string();
    assert_eq!(
        text,
        "normal: sep_conv_5x5@0 sep_conv_3x3@1 add | sep_conv_5x5@1 sep_conv_3x3@1 add | \
         avg_pool_3x3@0 identity@1 add | avg_pool_3x3@1 avg_pool_3x3@1 add | \
         sep_conv_3x3@0 identity@0 add -> 1,2,3,4,5,6 ; \
         reduction: sep_conv_5x5@0 sep_conv_7x7@1 add | max_pool_3x3@0 sep_conv_7x7@1 add | \
         avg_pool_3x3@0 sep_conv_5x5@1 add | identity@3 avg_pool_3x3@2 add | \
         sep_conv_3x3@2 max_pool_3x3@0 add -> 3,4,5,6"
    );
    assert!(!text.contains('\n'));
}

#[test]
fn text_round_trips_exactly() {
    for g in many_genotypes() {
        let text = g.to_string();
        let back: Genotype = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(back, g);
        assert_eq!(Genotype::from_json_or_text(&text).unwrap(), g);
    }
}

#[test]
fn json_round_trips_exactly() {
    for g in many_genotypes() {
        let json = g.to_json_pretty();
        assert_eq!(Genotype::from_json(&json).unwrap(), g);
        assert_eq!(Genotype::from_json_or_text(&json).unwrap(), g);
        let compact = serde_json::to_string(&g).unwrap();
        assert_eq!(Genotype::from_json(&compact).unwrap(), g);
    }
}

#[test]
fn json_shape_is_the_documented_one() {
    let v: serde_json::Value = serde_json::from_str(&named::nasnet_a().to_json_pretty()).unwrap();
    assert_eq!(
        v["normal"]["blocks"][0],
        serde_json::json!({"inputs": [0, 1], "ops": ["sep_conv_5x5", "sep_conv_3x3"], "combine": "add"})
    );
    assert_eq!(v["normal"]["concat"], serde_json::json!([1, 2, 3, 4, 5, 6]));
    assert_eq!(v["reduction"]["concat"], serde_json::json!([3, 4, 5, 6]));
    assert_eq!(v.as_object().unwrap().len(), 2);
}

#[test]
fn text_parsing_is_lenient_about_layout() {
    let g = named::pnasnet_5();
    let messy = format!(
        "  reduction :  {}\n;\n normal:{}  ",
        g.reduction.to_string().replace(" | ", "|"),
        g.normal
            .to_string()
            .replace("->", "  ->  ")
            .replace(',', " , ")
    );
    assert_eq!(messy.parse::<Genotype>().unwrap(), g);
}

fn text_err(s: &str) -> GenotypeError {
    s.parse::<Genotype>().unwrap_err()
}

#[test]
fn malformed_text_gives_typed_errors() {
    let good = named::nasnet_a().to_string();
    let (normal_part, reduction_part) = good.split_once(" ; ").unwrap();

    assert_eq!(
        text_err(normal_part),
        GenotypeError::MissingCell {
            cell: "reduction".into()
        }
    );
    assert_eq!(
        text_err(reduction_part),
        GenotypeError::MissingCell {
            cell: "normal".into()
        }
    );
    assert!(matches!(
        text_err(&format!("{normal_part} ; {normal_part}")),
        GenotypeError::TextSyntax { ref reason, .. } if reason.contains("twice")
    ));
    assert!(matches!(
        text_err(&good.replace("reduction:", "middle:")),
        GenotypeError::TextSyntax { ref reason, .. } if reason.contains("middle")
    ));
    assert!(matches!(
        text_err("just some words"),
        GenotypeError::TextSyntax { ref context, .. } if context == "cell header"
    ));
    assert_eq!(
        text_err(&good.replacen("sep_conv_5x5", "sep_conv_9x9", 1)),
        GenotypeError::UnknownOp("sep_conv_9x9".into())
    );
    assert_eq!(
        text_err(&good.replacen(" add ", " mul ", 1)),
        GenotypeError::UnknownCombine("mul".into())
    );
    assert!(matches!(
        text_err(&good.replacen("sep_conv_5x5@0", "sep_conv_5x5", 1)),
        GenotypeError::TextSyntax { ref context, ref reason } if context == "normal cell, block 0" && reason.contains("op@input")
    ));
    assert!(matches!(
        text_err(&good.replacen("@1", "@x", 1)),
        GenotypeError::TextSyntax { ref reason, .. } if reason.contains("`x`")
    ));
    assert!(matches!(
        text_err(&good.replacen(" add |", " |", 1)),
        GenotypeError::TextSyntax { ref reason, .. } if reason.contains("found 2 item")
    ));
    assert!(matches!(
        text_err(&good.replacen(" -> 1,2,3,4,5,6", " 1,2,3,4,5,6", 1)),
        GenotypeError::TextSyntax { ref reason, .. } if reason.contains("->")
    ));
    assert!(matches!(
        text_err(&good.replacen("-> 1,2", "-> 1,two", 1)),
        GenotypeError::TextSyntax { ref context, .. } if context == "normal cell output list"
    ));
    // Structural errors come from validation, with the same variants as JSON.
    assert!(matches!(
        text_err(&good.replacen("sep_conv_5x5@0", "sep_conv_5x5@4", 1)),
        GenotypeError::InputOutOfRange {
            block: 0,
            index: 4,
            ..
        }
    ));
    assert!(matches!(
        text_err(&good.replacen("-> 3,4,5,6", "-> ", 1)),
        GenotypeError::EmptyOutput { ref cell } if cell == "reduction"
    ));
    assert!(matches!(
        text_err(&good.replacen("-> 3,4,5,6", "-> 3,3", 1)),
        GenotypeError::DuplicateOutput { index: 3, .. }
    ));
    assert!(matches!(
        text_err(&good.replacen("-> 3,4,5,6", "-> 3,9", 1)),
        GenotypeError::OutputOutOfRange { index: 9, .. }
    ));
    assert!(matches!(
        text_err("normal: -> 0 ; reduction: -> 0"),
        GenotypeError::NoBlocks { ref cell } if cell == "normal"
    ));
    // Error messages are single lines.
    for e in [text_err(""), text_err(&good.replacen("@1", "@x", 1))] {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

#[test]
fn parse_cell_reads_one_cell() {
    let c = parse_cell("sep_conv_3x3@0 identity@1 concat -> 2", CellRole::Normal).unwrap();
    assert_eq!(c.blocks.len(), 1);
    assert_eq!(c.concat, vec![2]);
    assert_eq!(c.to_string(), "sep_conv_3x3@0 identity@1 concat -> 2");
}

fn json_err(s: &str) -> GenotypeError {
    Genotype::from_json(s).unwrap_err()
}

#[test]
fn malformed_json_gives_typed_errors() {
    let good = named::nasnet_a().to_json_pretty();
    assert!(matches!(json_err("{not json"), GenotypeError::Parse(_)));
    assert!(matches!(json_err("[]"), GenotypeError::Parse(_)));
    assert_eq!(
        json_err(&good.replacen("sep_conv_5x5", "sep_conv_9x9", 1)),
        GenotypeError::UnknownOp("sep_conv_9x9".into())
    );
    assert_eq!(
        json_err(&good.replacen("\"add\"", "\"mul\"", 1)),
        GenotypeError::UnknownCombine("mul".into())
    );
    // A missing field or an extra one is a parse error naming the field.
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["reduction"].as_object_mut().unwrap().remove("concat");
    let e = json_err(&v.to_string());
    assert!(
        matches!(e, GenotypeError::Parse(ref m) if m.contains("concat")),
        "{e}"
    );
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["normal"]["blocks"][0]["stride"] = serde_json::json!(2);
    let e = json_err(&v.to_string());
    assert!(
        matches!(e, GenotypeError::Parse(ref m) if m.contains("stride")),
        "{e}"
    );
    // Three inputs in a block.
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["normal"]["blocks"][0]["inputs"] = serde_json::json!([0, 1, 1]);
    assert!(matches!(json_err(&v.to_string()), GenotypeError::Parse(_)));
    // Structural errors.
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["normal"]["blocks"][2]["inputs"] = serde_json::json!([0, 4]);
    assert!(matches!(
        json_err(&v.to_string()),
        GenotypeError::InputOutOfRange {
            block: 2,
            input: 1,
            index: 4,
            available: 4,
            ..
        }
    ));
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["reduction"]["concat"] = serde_json::json!([]);
    assert!(matches!(
        json_err(&v.to_string()),
        GenotypeError::EmptyOutput { .. }
    ));
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["normal"]["concat"] = serde_json::json!([1, 1]);
    assert!(matches!(
        json_err(&v.to_string()),
        GenotypeError::DuplicateOutput { index: 1, .. }
    ));
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["normal"]["concat"] = serde_json::json!([7]);
    assert!(matches!(
        json_err(&v.to_string()),
        GenotypeError::OutputOutOfRange { index: 7, .. }
    ));
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["normal"]["blocks"] = serde_json::json!([]);
    assert!(matches!(
        json_err(&v.to_string()),
        GenotypeError::NoBlocks { .. }
    ));
}

#[test]
fn description_names_every_block_and_output() {
    let d = describe(&named::nasnet_a());
    assert_eq!(d.lines().count(), 2 * (1 + 5 + 1));
    assert!(
        d.contains("block 0: state 2 = add(sep_conv_5x5(h_i), sep_conv_3x3(h_{i-1}))"),
        "{d}"
    );
    assert!(
        d.contains("block 3: state 5 = add(identity(block 1), avg_pool_3x3(block 0))"),
        "{d}"
    );
    assert!(
        d.contains("output: concat of states 3 (block 1), 4 (block 2), 5 (block 3), 6 (block 4)"),
        "{d}"
    );
}

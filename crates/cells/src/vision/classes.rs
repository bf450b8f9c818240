//! The 1000 ImageNet-1k class names in the order 1000-class checkpoints use (both ports' and
//! timm's), embedded from `data/imagenet1k_classes.tsv` (WordNet id, a tab, the names), so a
//! classifier's output index can be printed as a name without any file at run time.

const TSV: &str = include_str!("../../data/imagenet1k_classes.tsv");

/// How many classes ImageNet-1k checkpoints predict.
pub const IMAGENET_CLASSES: usize = 1000;

/// The names of ImageNet-1k class `index` (e.g. 1: "goldfish, Carassius auratus"), or `None`
/// past the last class.
pub fn imagenet_class_name(index: usize) -> Option<&'static str> {
    let line = TSV.lines().nth(index)?;
    Some(line.split_once('\t').map_or(line, |(_, names)| names))
}

/// The WordNet synset id of ImageNet-1k class `index` (e.g. 1: "n01443537").
pub fn imagenet_synset(index: usize) -> Option<&'static str> {
    let line = TSV.lines().nth(index)?;
    line.split_once('\t').map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_has_1000_classes_in_checkpoint_order() {
        assert_eq!(TSV.lines().count(), IMAGENET_CLASSES);
        assert_eq!(imagenet_synset(0), Some("n01440764"));
        assert_eq!(imagenet_class_name(1), Some("goldfish, Carassius auratus"));
        assert!(imagenet_class_name(999).is_some() && imagenet_class_name(1000).is_none());
    }
}

-- label-flip — a data-level attack: the Byzantine workers compute honest gradients, but on
-- labels y' = C - 1 - y. The experiment builds those workers with poison = "label-flip";
-- their rows of G then need no further change.
return {
  name = "label-flip",
  kind = "data",
  poison = "label-flip",
  doc = "the Byzantine workers train on flipped labels y' = C-1-y",
  paper = "Allen-Zhu et al., ICLR 2021; Karimireddy et al., ICLR 2022 (9 - y on 10 classes)",
  args = {},
}

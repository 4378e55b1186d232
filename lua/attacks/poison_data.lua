-- poison-data — a data-level attack after AggregaThor's mnistAttack: the Byzantine workers'
-- pixels are scaled by -1e12 and their labels shuffled. AggregaThor poisoned every worker's
-- data; here only the Byzantine workers' (the experiment applies it, with poison = "poison-data").
return {
  name = "poison-data",
  kind = "data",
  poison = "poison-data",
  doc = "the Byzantine workers train on pixels * -1e12 with shuffled labels",
  paper = "Damaskinos et al., 'AggregaThor', SysML 2019 (mnistAttack), Byzantine workers only",
  args = {},
}

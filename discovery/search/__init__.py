"""How the search chooses what to show and keep: the one ranking (``ranking``), behavioural traits of a profile
(``traits``), MAP-Elites niches over them (``niches``), near-duplicate rejection (``novelty``) and the running
lessons in the prompt (``lessons``)."""

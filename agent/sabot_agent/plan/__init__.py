"""The planner: front-ends (SQL, the short forms) build a logical plan (`logical`), typed by the rules
in `types` over the expressions in `expressions`; `physical` cuts it into the stages the agents run."""

"""Generation (paper section 3, inference): the pipeline object, the stage-1 and stage-2
samplers, batch jobs."""

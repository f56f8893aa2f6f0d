"""A testing library for controller developers (issue 14): hypothesis strategies over the scenario
space (``scenarios.testing.strategies``) and a pytest plugin with twin fixtures
(``scenarios.testing.plugin``, registered through the ``pytest11`` entry point)."""

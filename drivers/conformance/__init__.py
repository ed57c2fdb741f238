"""The conformance run of ``agent module check`` (DESIGN.md sections 5 and 12): named cases
against a :class:`~drivers.module.CardModule`, through whichever driver reaches it, each passed,
failed with what was wrong, or skipped with why it cannot run against this module.

A vendor proves a module or a driver with it before it ships. Cases that load keys run only
under the documented test TMKs, so a production module's keys are never touched.
"""

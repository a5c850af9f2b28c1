"""Built-in incentive program calculators, one module each; see docs/programs.md.

``spiff``, ``rebate``, ``deal_registration``, ``activity``, ``coop``, ``mdf``, ``referral`` and ``loyalty_points`` are
registered as ``payhub.calculators`` entry points and configured per program in the settings file.
"""

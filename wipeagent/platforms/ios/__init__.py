"""The iOS platform: what to ask an iPhone over lockdown and what the answers mean."""

from wipeagent.platforms.ios.driver import IosDriver

__all__ = ["IosDriver"]

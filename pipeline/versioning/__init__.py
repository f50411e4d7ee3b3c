"""Version facts from git, the tag policy, the changelog, release guards (pure logic + the git adapter)."""

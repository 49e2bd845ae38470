@total-loss
Feature: Total loss
  Every volume is gone at once. The cluster must restore itself from the
  newest good snapshot, with no human step, and tell us what was lost.

  Scenario: every volume is deleted and the cluster restores itself
    Given a healthy stack
    And secrets written before the newest snapshot
    And a steady write load
    When every volume is deleted
    Then the cluster restores itself within the objective
    And the secrets written before the snapshot read back
    And the measured RPO is within the objective
    And no acknowledged write before the snapshot is lost

@snapshot-integrity
Feature: Snapshot integrity
  A backup that does not verify must never be restored. When the newest
  snapshot is corrupt, the restore uses the one before it and says so.

  Scenario: the newest snapshot is corrupt
    Given a healthy stack
    And secrets written before the newest snapshot
    And a newer snapshot that is corrupt
    When every volume is deleted
    Then the cluster restores itself within the objective
    And the restore used the snapshot before the corrupt one
    And the evidence names the skipped snapshot
    And the secrets written before the snapshot read back

@leader-loss
Feature: Leader loss
  The active node dies under write load. Raft elects another; clients keep
  working once it serves.

  Scenario: the leader is killed under write load
    Given a healthy stack
    And a steady write load
    When the leader is killed
    Then a new leader serves within the objective
    And no acknowledged write is lost
    And the old leader rejoins as a voter

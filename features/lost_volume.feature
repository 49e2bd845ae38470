@lost-volume
Feature: One lost volume
  A node's persistent volume is deleted. The node must come back empty,
  rejoin the cluster, unseal and catch up, and nothing may be lost.

  Scenario: a follower's data is deleted
    Given a healthy stack
    And a steady write load
    When a follower's volume is deleted
    Then the cluster is healthy again within the objective
    And the node that lost its volume serves the data written before
    And no acknowledged write is lost

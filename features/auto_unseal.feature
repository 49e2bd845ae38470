@auto-unseal
Feature: Auto-unseal
  Every node seals itself when its process stops. With KMS auto-unseal, a node
  that starts again must unseal by itself: nobody is paged to type keys.

  Scenario: every node restarts at once and all unseal with no human
    Given a healthy stack
    And a steady write load
    When every node is killed at once
    Then every node is unsealed again within the objective
    And an app can log in with kubernetes auth and read its secret
    And no acknowledged write is lost

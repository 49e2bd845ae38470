@kms-revoked
Feature: KMS access revoked
  The seal's KMS grant is revoked (an explicit IAM deny). Running nodes keep
  their keys in memory and keep serving; a node that restarts cannot unseal
  until access returns, and then unseals by itself.

  Scenario: a node restarts while KMS access is revoked
    Given a healthy stack
    And a steady write load
    When KMS access is revoked
    Then the running nodes keep serving
    When a follower restarts
    Then the restarted node stays sealed
    When KMS access is restored
    Then every node is unsealed again within the objective
    And no acknowledged write is lost
